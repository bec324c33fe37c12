"""The test servers themselves, checked with plain standard-library / imapclient
clients: if these fail, every provider test built on them is meaningless."""

from __future__ import annotations

import base64
import os
import poplib
import smtplib
import socket
import ssl
import stat
import time
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from mailgate.testing.servers import MODES, SmtpServer, ensure_installed

USER, PASSWORD = "agent@example.test", "s3cret-agent"


def unique_message(to: str = USER) -> tuple[str, bytes]:
    subject = f"test {uuid.uuid4()}"
    raw = (f"From: sender@example.test\r\nTo: {to}\r\nSubject: {subject}\r\n"
           f"Message-ID: <{uuid.uuid4()}@example.test>\r\n\r\n"
           ".leading dot\r\nsecond line\r\n").encode()
    return subject, raw


def read_or_empty(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process just exited
        return b""


# -- certificates -------------------------------------------------------------------

def test_ca_files(mail_ca):
    assert mail_ca.ca_path.read_text() == mail_ca.ca_pem
    assert stat.S_IMODE(os.stat(mail_ca.key_path).st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(mail_ca.cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]


# -- SMTP -------------------------------------------------------------------------

def smtp_connect(server: SmtpServer, ca) -> smtplib.SMTP:
    """Connected, EHLO done, TLS (verified against ``ca``) where the mode has it."""
    if server.mode == "TLS":
        client = smtplib.SMTP_SSL(server.host, server.port, context=ca.client_context(),
                                  timeout=5)
    else:
        client = smtplib.SMTP(server.host, server.port, timeout=5)
    client.ehlo()
    if server.mode == "STARTTLS":
        client.starttls(context=ca.client_context())
        client.ehlo()
    return client


@pytest.mark.parametrize("mode", MODES)
def test_smtp_auth_and_send(smtp_server, mail_ca, mode):
    server = smtp_server(mode)
    with smtp_connect(server, mail_ca) as client:
        assert set(client.esmtp_features["auth"].split()) == {"LOGIN", "PLAIN"}
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login(USER, "wrong")
        assert refused.value.smtp_code == 535
        assert refused.value.smtp_error.startswith(b"5.7.8")
        client.login(USER, PASSWORD)
        _, raw = unique_message("rcpt@example.test")
        client.sendmail(USER, ["rcpt@example.test"], raw)
    (message,) = server.messages
    assert (message.mail_from, message.rcpt_tos, message.login) == (
        USER, ["rcpt@example.test"], USER)
    assert message.content == raw  # dot-stuffing undone, CRLF kept


def test_smtp_auth_login_mechanism_and_plain_username(smtp_server, mail_ca):
    with smtp_connect(smtp_server("NONE"), mail_ca) as client:
        client.user, client.password = "support", "s3cret-support"
        assert client.auth("LOGIN", client.auth_login)[0] == 235


def test_smtp_starttls_mode_refuses_auth_before_starttls(smtp_server):
    server = smtp_server("STARTTLS")
    with smtplib.SMTP(server.host, server.port, timeout=5) as client:
        client.ehlo()
        assert client.has_extn("starttls") and not client.has_extn("auth")
        plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        code, _ = client.docmd("AUTH", "PLAIN " + plain)
        assert code == 530  # Must issue a STARTTLS command first


@pytest.mark.parametrize("mode", ["STARTTLS", "TLS"])
def test_smtp_certificate_not_trusted(smtp_server, other_ca, mode):
    with pytest.raises(ssl.SSLCertVerificationError):
        smtp_connect(smtp_server(mode), other_ca)


def test_smtp_fail_next_then_accept(smtp_server, mail_ca):
    server = smtp_server("NONE")
    server.fail_next = [(451, "4.3.0 Try again later")] * 2
    _, raw = unique_message()
    with smtp_connect(server, mail_ca) as client:
        client.login(USER, PASSWORD)
        for _ in range(2):
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail(USER, [USER], raw)
            assert refused.value.smtp_code == 451
        client.sendmail(USER, [USER], raw)
    assert len(server.handler.rejected) == 2 and len(server.messages) == 1


def test_smtp_state_is_reset_between_tests(smtp_servers):
    # The tests above left messages and rejections behind.
    assert all(not s.messages and not s.handler.rejected and not s.fail_next
               for s in smtp_servers.values())


def test_smtp_long_xoauth2_line(mail_users, mail_ca):
    token = "t" * 1200  # real bearer tokens make AUTH lines of ~1.3 KB
    with SmtpServer("TLS", mail_users, mail_ca,
                    xoauth2=lambda user, tok: (user, tok) == (USER, token)) as server:
        with smtp_connect(server, mail_ca) as client:
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                client.auth("XOAUTH2", lambda _=None: f"user={USER}\1auth=Bearer bad\1\1")
            assert refused.value.smtp_code == 535
            code, _ = client.auth("XOAUTH2",
                                  lambda _=None: f"user={USER}\1auth=Bearer {token}\1\1")
            assert code == 235


def test_smtp_deliver_to_dovecot(mail_users, mail_ca, dovecot):
    def forward(raw: bytes, rcpt_tos: list[str]) -> None:
        for rcpt in rcpt_tos:
            dovecot.deliver(rcpt, raw)

    subject, raw = unique_message("support")
    with SmtpServer("NONE", mail_users, mail_ca, deliver_to=forward) as server:
        with smtp_connect(server, mail_ca) as client:
            client.login(USER, PASSWORD)
            client.sendmail(USER, ["support"], raw)
    assert b"Return-Path: <sender@example.test>\r\n" + raw in dovecot.fetch_all("support").values()


# -- Dovecot ------------------------------------------------------------------------

def test_dovecot_installed():
    assert os.access(ensure_installed(), os.X_OK)


@pytest.mark.parametrize("user", ["agent@example.test", "support"])
@pytest.mark.parametrize("security", ["NONE", "STARTTLS", "TLS"])
def test_imap_login(dovecot, mail_users, mail_ca, security, user):
    if security == "TLS":
        client = IMAPClient(dovecot.host, dovecot.imaps_port, ssl_context=mail_ca.client_context(),
                            timeout=5)
    else:
        client = IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=5)
        assert b"STARTTLS" in client.capabilities()
        if security == "STARTTLS":
            client.starttls(mail_ca.client_context())
    client.login(user, mail_users[user])
    assert client.select_folder("INBOX")[b"UIDVALIDITY"]
    client.logout()


def test_imaps_certificate_not_trusted(dovecot, other_ca):
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient(dovecot.host, dovecot.imaps_port, ssl_context=other_ca.client_context(),
                   timeout=5)


def test_imap_wrong_password_is_fast(dovecot, record_property):
    # Timing is reported, not asserted (<1 ms here; ~0.5 s without the nodelay
    # passdb, growing to 1.6 s, 6 s, 10 s+ with the auth penalty).
    times = []
    for password in ["wrong", "wrong", ""]:
        client = IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=5)
        started = time.monotonic()
        with pytest.raises(LoginError):
            client.login(USER, password)
        times.append(round(time.monotonic() - started, 4))
        client.shutdown()
    client = IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=5)
    with pytest.raises(LoginError):
        client.login("nobody@example.test", PASSWORD)
    record_property("failed_login_seconds", times)
    print("failed IMAP logins took", times)


@pytest.mark.parametrize("tls", [False, True], ids=["STLS", "TLS"])
def test_pop3_login(dovecot, mail_ca, tls):
    if tls:
        client = poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port,
                                 context=mail_ca.client_context(), timeout=5)
    else:
        client = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=5)
        assert "STLS" in client.capa()
        client.stls(context=mail_ca.client_context())
    client.user("support")
    with pytest.raises(poplib.error_proto):
        client.pass_("wrong")
    client.user("support")
    client.pass_("s3cret-support")
    client.stat()
    client.quit()


def test_deliver_and_append_keep_the_bytes(dovecot):
    _, delivered = unique_message()
    _, appended = unique_message()
    dovecot.deliver(USER, delivered, sender="bounce@example.test")
    uid = dovecot.append(USER, appended, folder="Archive")
    inbox = dovecot.fetch_all(USER).values()
    # LMTP always prepends Return-Path (Dovecot 2.3); nothing else changes.
    assert b"Return-Path: <bounce@example.test>\r\n" + delivered in inbox
    assert dovecot.fetch_all(USER, "Archive")[uid] == appended


def test_idle_capability(dovecot, dovecot_no_idle):
    for server, has_idle in [(dovecot, True), (dovecot_no_idle, False)]:
        client = IMAPClient(server.host, server.imap_port, ssl=False, timeout=5)
        assert (b"IDLE" in client.capabilities()) is has_idle  # before login
        client.login("support", "s3cret-support")
        assert (b"IDLE" in client.capabilities()) is has_idle  # after login
        assert b"MOVE" in client.capabilities()
        client.logout()


def test_clean_dovecot(clean_dovecot):
    assert clean_dovecot.fetch_all(USER) == {}
    client = IMAPClient(clean_dovecot.host, clean_dovecot.imap_port, ssl=False)
    client.login(USER, PASSWORD)
    assert [name for _, _, name in client.list_folders()] == ["INBOX"]
    client.logout()


def test_restart_stop_and_users(dovecot_factory, mail_ca):
    server = dovecot_factory(client_limit=50)
    port = server.imap_port
    client = IMAPClient(server.host, port, ssl=False, timeout=5)
    client.login("support", "s3cret-support")
    client.select_folder("INBOX")

    started = time.monotonic()
    server.restart()
    print(f"Dovecot restart took {time.monotonic() - started:.3f} s")
    with pytest.raises((IMAPClient.AbortError, OSError)):
        client.noop()  # the old session is gone
    assert server.imap_port == port
    client = IMAPClient(server.host, port, ssl=False, timeout=5)
    client.login("support", "s3cret-support")
    client.logout()

    server.add_user("new@example.test", "pw-1")  # waits up to 1 s
    client = IMAPClient(server.host, port, ssl=False, timeout=5)
    client.login("new@example.test", "pw-1")
    client.logout()

    name = server.instance_name
    server.close()
    assert not server.running
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline")
                if name.encode() in read_or_empty(p)]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, port), timeout=1)


# -- silent listener, closed port ----------------------------------------------------

def test_silent_listener_times_out(silent_listener):
    started = time.monotonic()
    # smtplib reports the read timeout on the banner as a lost connection.
    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        smtplib.SMTP(silent_listener.host, silent_listener.port, timeout=0.5)
    assert 0.4 < time.monotonic() - started < 2
    assert silent_listener.connections == 1


def test_closed_port_refuses(closed_port):
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((closed_port.host, closed_port.port), timeout=1)
