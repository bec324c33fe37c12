"""What reaches a log: credentials are redacted by their shape (never by matching
the values the process has seen), message bodies never, and the database files
are private like the key file."""
from __future__ import annotations

import base64
import json
import logging
import os
import stat
import tracemalloc
from urllib.parse import quote, urlencode

import pytest
from google.protobuf import struct_pb2

import mailgate_echo_driver
from mailgate.server import limits, logs
from mailgate.server.logs import REDACTED, RedactingFilter, protect
from mailgate.server.store.db import Database
from mailgate.testing.consumer import Consumer
from mailgate.v1 import mail_service_pb2 as mpb, provider_pb2, provider_service_pb2 as pb

from support import PASSWORD, USER, mail, wait_state


@pytest.fixture
def mailgate_plugins():
    return [mailgate_echo_driver]


def _echo(key: str, name: str = "Vault") -> provider_pb2.Provider:
    s = struct_pb2.Struct()
    s.update({"greeting": "hi", "api_key": key})
    return provider_pb2.Provider(display_name=name, type="echo", account="v@example.test", plugin_settings=s)


def _filtered(message: str) -> str:
    record = logging.LogRecord("some.library", logging.DEBUG, __file__, 1, "%s", (message,), None)
    RedactingFilter().filter(record)
    return record.getMessage()


# -- the filter keeps nothing and mangles nothing ------------------------------------------

def test_a_huge_refused_secret_leaves_nothing_behind_in_the_log_filter(mailgate_server, caplog):
    """The largest key a request may carry, refused by the check, then ordinary
    logging: nothing the filter allocated is still held (a filter that remembered
    secrets would hold the key, or a pattern built from it, and rebuild it for every
    new one). A bigger one is refused before anything reads it (test_limits)."""
    caplog.set_level(logging.INFO)
    protect(caplog.handler)
    tracemalloc.start(10)
    try:
        huge = "k" * limits.SECRET
        report = mailgate_server.stub.ValidateProvider(pb.ValidateProviderRequest(provider=_echo(huge)))
        assert report.report.checks and not any(c.outcome == c.OUTCOME_PASSED for c in report.report.checks)
        del huge, report
        for n in range(3):
            logging.getLogger("mailgate.test").info("an ordinary line %d, through the filter", n)
        held = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, logs.__file__, all_frames=True)]).statistics("filename")
    finally:
        tracemalloc.stop()
    assert "an ordinary line 2, through the filter" in caplog.text
    assert sum(s.size for s in held) < limits.SECRET  # less than the secret itself


def test_a_secret_that_is_a_common_word_leaves_that_word_in_other_log_lines(mailgate_server, caplog,
                                                                           monkeypatch):
    monkeypatch.setattr(mailgate_echo_driver, "ACCEPTED_KEY", "provider")
    caplog.set_level(logging.INFO)
    protect(caplog.handler)
    created = mailgate_server.stub.CreateProvider(pb.CreateProviderRequest(provider=_echo("provider")))
    pid = created.name.removeprefix("providers/")
    assert created.state == provider_pb2.Provider.STATE_GREEN
    assert f"created provider {pid} 'Vault' (echo)" in caplog.text
    logging.getLogger("mailgate.test").info("provider %s is unrelated to the key", pid)
    assert f"provider {pid} is unrelated to the key" in caplog.text


SECRET = "Zq3-y9TfW2_uE8pLk0RxV4mNbC7dHs1aQ6jG5oIeYw"
PASSWORD_OF_A_USER = "Tr0ub4dor&3:x"
MGT = "mgt_0123456789abcdef0123456789abcdef_" + SECRET
JWT = ("eyJhbGciOiJSUzI1NiIsImtpZCI6ImFiYyJ9."
       "eyJpc3MiOiJodHRwczovL2xvZ2luLmV4YW1wbGUiLCJzdWIiOiIxMjMifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


PLAIN = _b64(f"\0{USER}\0{PASSWORD_OF_A_USER}")
XOAUTH2 = _b64(f"user={USER}\x01auth=Bearer {SECRET}\x01\x01")
BASIC = _b64(f"app:{SECRET}")


# (kind, the secret, where it appears): every shape a library or a trace writes it in
KINDS = [
    ("password", PASSWORD_OF_A_USER, [
        urlencode({"username": USER, "password": PASSWORD_OF_A_USER}),
        json.dumps({"username": USER, "password": PASSWORD_OF_A_USER}),
        repr({"username": USER, "password": PASSWORD_OF_A_USER}),
        f"> b'ABCD1 LOGIN {USER} \"{PASSWORD_OF_A_USER}\"'",
        f"> b'PASS {PASSWORD_OF_A_USER}'",
        f"send: 'AUTH PLAIN {PLAIN}\\r\\n'",
        f"postgresql+psycopg://mailgate:{quote(PASSWORD_OF_A_USER, safe='')}@db.example.test:5432/mailgate",
    ]),
    ("access token", SECRET, [
        f"access_token={SECRET}&token_type=Bearer",
        json.dumps({"token_type": "Bearer", "access_token": SECRET, "expires_in": 3599}),
        f"headers={{'Authorization': 'Bearer {SECRET}', 'Accept': '*/*'}}",
        f"user={USER}\x01auth=Bearer {SECRET}\x01\x01",
        f"> b'WXYZ2 AUTHENTICATE XOAUTH2 {XOAUTH2}'",
        f"ya29.{SECRET}",
    ]),
    ("refresh token", SECRET, [
        urlencode({"grant_type": "refresh_token", "refresh_token": SECRET, "client_id": "app"}),
        json.dumps({"refresh_token": SECRET, "scope": "openid"}),
        json.dumps({"RefreshToken": {"k": {"credential_type": "RefreshToken", "secret": SECRET}}}),
        json.dumps(json.dumps({"secret": SECRET})),  # a serialized token cache inside JSON
        f"1//{SECRET}",
    ]),
    ("authorization code", SECRET, [
        f"GET /oauth/callback?state=s1&code={SECRET}&session_state=x HTTP/1.1",
        urlencode({"grant_type": "authorization_code", "code": SECRET, "redirect_uri": "http://x/cb"}),
        json.dumps({"data": {"client_id": "app", "code": SECRET}}, indent=4),
    ]),
    ("PKCE verifier", SECRET, [
        urlencode({"code": "c" * 30, "code_verifier": SECRET}),
        json.dumps({"code_verifier": SECRET, "redirect_uri": "http://x/cb"}, indent=4),
    ]),
    ("client secret", SECRET, [
        urlencode({"client_id": "app", "client_secret": SECRET}),
        json.dumps({"client_id": "app", "client_secret": SECRET}),
        f"Authorization: Basic {BASIC}",
    ]),
    ("API token", MGT, [
        f"metadata=(('authorization', 'Bearer {MGT}'),)",
        f"the token {MGT} was pasted into a ticket",
    ]),
    ("ID token", JWT, [
        json.dumps({"id_token": JWT}),
        f"token {JWT} refused",
    ]),
]


@pytest.mark.parametrize("secret, line", [
    pytest.param(secret, line, id=f"{kind}-{i}") for kind, secret, lines in KINDS for i, line in enumerate(lines)])
def test_each_kind_of_secret_is_redacted_wherever_it_appears_in_a_line(secret, line):
    forms = {secret, quote(secret, safe=""), json.dumps(secret)[1:-1]} | {b for b in (PLAIN, XOAUTH2, BASIC) if b in line}
    assert any(f in line for f in forms)
    out = _filtered(f"before {line} after")
    assert REDACTED in out and out.startswith("before ") and out.endswith(" after")
    assert not [f for f in forms if f in out], out


@pytest.mark.parametrize("line", [
    "created provider 3f1c0d2e 'Sales desk' (smtp_imap) GREEN",
    "provider 3f1c0d2e is GREY (AUTHORIZATION_PENDING): waiting for authorization: call ActivateProvider",
    "smtp.auth smtp.example.test:587 failed in 0.120 s: AUTH_FAILED 535 5.7.8 Username and Password not accepted",
    "4f1c: RETRYING 451 code=451 password: refused by the server",
    "token tokens/7010e32c revoked",
    "secret key file /var/lib/mailgate/mailgate.key is readable by others (mode 644): chmod 600 it",
    "provider 3f1c: access token renewed, valid for 3599 s",
    "a Bearer token is required; the check PASSED",
])
def test_ordinary_log_lines_pass_unchanged(line):
    assert _filtered(line) == line


# -- message bodies -------------------------------------------------------------------------

def test_debug_logging_of_sending_and_receiving_never_writes_a_message_body(mailgate_server, clean_dovecot,
                                                                            smtp_server, mail_ca, caplog):
    """The whole process at DEBUG (MAILGATE_LOG_LEVEL=DEBUG): mailgate, imapclient's
    protocol trace, every library. Sent (with a copy saved over IMAP) and received
    mail's bodies are nowhere in the log. The test SMTP server's own log (aiosmtpd,
    `mail.log`, in this process only for the test) is left out."""
    caplog.set_level(logging.DEBUG)
    marker = "body-marker-5c1e0a"
    smtp = smtp_server("STARTTLS")
    p = mailgate_server.stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
        display_name="Desk", type="smtp_imap", account=USER, receive_emails=True, campaign="support",
        smtp_imap=provider_pb2.SmtpImapSettings(
            password=PASSWORD, ca_certificates_pem=mail_ca.ca_pem, sent_folder="Sent",
            smtp=provider_pb2.Endpoint(host=smtp.host, port=smtp.port, security=provider_pb2.SECURITY_STARTTLS),
            inbound=provider_pb2.Endpoint(host=clean_dovecot.host, port=clean_dovecot.imaps_port,
                                          security=provider_pb2.SECURITY_TLS)))))
    sent = mail(mailgate_server).SendEmail(mpb.SendEmailRequest(
        provider=p.name, to=["customer@example.test"], subject="Your parcel", text_body=f"Sent {marker}-out"))
    assert wait_state(mailgate_server, sent.name, mpb.OutboundMessage.STATE_SENT).state == mpb.OutboundMessage.STATE_SENT
    [got] = smtp.wait_for_messages(1)
    assert f"{marker}-out".encode() in got.content
    consumer = Consumer(mailgate_server, campaign="support")
    try:
        clean_dovecot.deliver(USER, b"From: customer@example.test\r\nTo: agent@example.test\r\nSubject: help\r\n"
                                    b"Message-ID: <m1@example.test>\r\n\r\nReceived " + f"{marker}-in".encode() + b"\r\n")
        [r] = consumer.take(timeout=10)
        assert f"{marker}-in" in r.message.text_body
        consumer.ack(r)
    finally:
        consumer.close()
    records = [r for r in caplog.records if r.name != "mail.log"]  # before this test's own IMAP reads
    # SENT comes after the copy was saved in Sent (IMAP APPEND): that path ran too.
    assert any(f"{marker}-out".encode() in m for m in clean_dovecot.fetch_all(USER, "Sent").values())
    assert {"imapclient.imaplib", "mailgate.watch"} <= {r.name for r in records}  # the trace was on
    logged = "\n".join(r.getMessage() for r in records)
    assert marker not in logged


# -- database files ---------------------------------------------------------------------------

def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_fresh_servers_database_files_are_private(tmp_path, mailgate_server, mailgate_database_url):
    if not mailgate_database_url.startswith("sqlite"):
        pytest.skip("SQLite's files")
    mailgate_server.stub.CreateProvider(pb.CreateProviderRequest(provider=_echo("let-me-in")))
    files = {name: _mode(tmp_path / name) for name in ("mailgate.db", "mailgate.db-wal", "mailgate.db-shm")}
    assert files == dict.fromkeys(files, 0o600)


def test_database_files_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        db = Database(f"sqlite:///{tmp_path / 'm.db'}")
        db.upgrade()
        db.transaction(lambda s: s.execute(__import__("sqlalchemy").text("CREATE TABLE t (x)")))
        modes = {p.name: _mode(p) for p in tmp_path.glob("m.db*")}
        db.close()
    finally:
        os.umask(old)
    assert modes == {"m.db": 0o600, "m.db-wal": 0o600, "m.db-shm": 0o600}
