"""mailgate.drivers.transport against real servers (aiosmtpd, Dovecot) and a few
tiny ones of our own (a drip-feeding server, an SMTP server without AUTH)."""
from __future__ import annotations

import base64
import logging
import smtplib
import socket
import threading
import time

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from mailgate.drivers.api import CheckResult, ErrorCode, Outcome
from mailgate.drivers.transport import (
    Endpoint, LoginThrottle, PasswordAuth, TransportError, classify, client_context,
    connect_imap, connect_pop3, connect_smtp, default_throttle, probe)
from mailgate.testing.servers.dovecot import free_ports
from mailgate.testing.clock import FakeClock

AGENT = "agent@example.test"
CONNECTS = {"smtp": connect_smtp, "imap": connect_imap, "pop3": connect_pop3}
IDS = ("connect", "tls", "auth")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def throttle(clock) -> LoginThrottle:
    """A throttle of the test's own: tests never share failures through default_throttle."""
    return LoginThrottle(base=5.0, factor=2.0, cap=60.0, clock=clock)


def outcomes(trace: list[CheckResult]) -> list[tuple[str, str, str]]:
    return [(c.id, c.outcome.value, c.error_code.name) for c in trace]


def expect_failure(side, endpoint, auth, *, step, code, **kwargs) -> tuple[TransportError, list[CheckResult]]:
    """Runs connect_<side>, expects a TransportError at `step`, checks the trace shape."""
    trace: list[CheckResult] = []
    with pytest.raises(TransportError) as info:
        CONNECTS[side](endpoint, auth, trace=trace, **kwargs)
    err = info.value
    assert (err.side, err.step, err.code) == (side, step, code), repr(err)
    assert [c.id for c in trace] == [f"{side}.{s}" for s in IDS]
    failed = trace[IDS.index(step)]
    assert failed.outcome is Outcome.FAILED and failed.error_code is code
    assert failed.server_message == err.message
    for rest in trace[IDS.index(step) + 1:]:
        assert rest.outcome is Outcome.SKIPPED
        assert rest.server_message == f"not run: {side}.{step} failed"
    for before in trace[:IDS.index(step)]:
        assert before.outcome in (Outcome.PASSED, Outcome.SKIPPED)
    return err, trace


def assert_passed(trace, side, security):
    tls = "SKIPPED" if security == "NONE" else "PASSED"
    assert [(c.id, c.outcome.value) for c in trace] == [
        (f"{side}.connect", "PASSED"), (f"{side}.tls", tls), (f"{side}.auth", "PASSED")]
    assert all(c.error_code is ErrorCode.NONE for c in trace)
    assert all(c.duration > 0 for c in trace if c.outcome is Outcome.PASSED)  # each step timed
    if security == "NONE":
        assert trace[1].server_message == "security NONE: no TLS"


# --------------------------------------------------------------------------------------
# units: endpoint, TLS context, authenticator, classification, throttle


def test_endpoint_validates():
    assert Endpoint("smtp.example.test", 587, "STARTTLS").port == 587
    for bad in [("h", 0, "TLS"), ("h", 65536, "TLS"), ("h", "25", "TLS"), ("h", True, "TLS"),
                ("h", 25, "SSL"), ("h", 25, "starttls"), ("", 25, "NONE")]:
        with pytest.raises(ValueError):
            Endpoint(*bad)


def test_client_context_verifies_and_is_cached(mail_ca):
    import ssl
    for ctx in (client_context(), client_context(mail_ca.ca_pem)):
        assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname
        assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert client_context(mail_ca.ca_pem) is client_context(mail_ca.ca_pem)
    assert client_context(mail_ca.ca_pem).get_ca_certs()[0]["subject"] == (
        (("commonName", "mailgate test CA"),),)


def test_password_auth_hides_the_password():
    auth = PasswordAuth(AGENT, "s3cret-agent")
    for text in (repr(auth), str(auth), f"{auth}", repr([auth])):
        assert "s3cret" not in text and AGENT in text
    fp = auth.fingerprint()
    assert len(fp) == 64 and "s3cret" not in fp
    assert fp == PasswordAuth(AGENT, "s3cret-agent").fingerprint()
    assert fp != PasswordAuth(AGENT, "s3cret-agent2").fingerprint()
    assert fp != PasswordAuth("other", "s3cret-agent").fingerprint()


@pytest.mark.parametrize("exc, step, code, message", [
    (TimeoutError("timed out"), "connect", ErrorCode.TIMEOUT, "timed out after 10 s"),
    (ConnectionRefusedError(111, "Connection refused"), "connect", ErrorCode.CONNECT_FAILED,
     "connection refused"),
    (socket.gaierror(-2, "Name or service not known"), "connect", ErrorCode.CONNECT_FAILED,
     "name does not resolve"),
    (OSError(113, "No route to host"), "connect", ErrorCode.CONNECT_FAILED, "no route to host"),
    (ConnectionResetError(104, "Connection reset by peer"), "auth", ErrorCode.PROTOCOL_ERROR,
     "connection lost: connection reset by peer"),
    (smtplib.SMTPAuthenticationError(535, b"5.7.8 Authentication credentials invalid"), "auth",
     ErrorCode.AUTH_FAILED, "535 5.7.8 Authentication credentials invalid"),
    (smtplib.SMTPAuthenticationError(534, b"5.7.9 Please log in with your web browser\nand then try again"),
     "auth", ErrorCode.AUTH_FAILED, "534 5.7.9 Please log in with your web browser and then try again"),
    (smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server."), "auth",
     ErrorCode.AUTH_UNAVAILABLE, "server offers no AUTH"),
    (smtplib.SMTPException("No suitable authentication method found."), "auth",
     ErrorCode.AUTH_UNAVAILABLE, "no usable authentication mechanism"),
    (smtplib.SMTPNotSupportedError("STARTTLS extension not supported by server."), "tls",
     ErrorCode.TLS_FAILED, "server does not offer STARTTLS"),
    (smtplib.SMTPResponseException(454, b"4.7.0 TLS not available"), "tls", ErrorCode.TLS_FAILED,
     "454 4.7.0 TLS not available"),
    (smtplib.SMTPConnectError(554, b"5.7.1 no service for you"), "connect", ErrorCode.CONNECT_FAILED,
     "554 5.7.1 no service for you"),
    (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), "auth",
     ErrorCode.PROTOCOL_ERROR, "server closed the connection"),
    (smtplib.SMTPHeloError(501, b"5.5.4 bad HELO"), "auth", ErrorCode.PROTOCOL_ERROR,
     "501 5.5.4 bad HELO"),
    (__import__("imapclient").exceptions.LoginError(
        "login failed: b'[AUTHENTICATIONFAILED] Authentication failed.'"), "auth",
     ErrorCode.AUTH_FAILED, "[AUTHENTICATIONFAILED] Authentication failed."),
    (__import__("imaplib").IMAP4.error(b"[PRIVACYREQUIRED] Plaintext authentication disallowed"),
     "auth", ErrorCode.AUTH_UNAVAILABLE, "[PRIVACYREQUIRED] Plaintext authentication disallowed"),
    (__import__("imaplib").IMAP4.abort("socket error: EOF"), "auth", ErrorCode.PROTOCOL_ERROR,
     "socket error: EOF"),
    (__import__("poplib").error_proto(b"-ERR [AUTH] Authentication failed."), "auth",
     ErrorCode.AUTH_FAILED, "-ERR [AUTH] Authentication failed."),
    (__import__("poplib").error_proto("-ERR EOF"), "auth", ErrorCode.PROTOCOL_ERROR,
     "server closed the connection"),
])
def test_classify(exc, step, code, message):
    err = classify(exc, "smtp", step, timeout=10)
    assert (err.side, err.step, err.code, err.message) == ("smtp", step, code, message)


def test_classify_timeout_hidden_in_smtp_disconnect():
    try:
        try:
            raise TimeoutError("timed out")
        except OSError as e:
            raise smtplib.SMTPServerDisconnected(f"Connection unexpectedly closed: {e}")
    except smtplib.SMTPServerDisconnected as exc:
        assert classify(exc, "smtp", "auth", timeout=0.5).code is ErrorCode.TIMEOUT


def test_throttle_backoff_schedule(clock):
    t = LoginThrottle(base=5, factor=2, cap=30, clock=clock)
    auth = PasswordAuth(AGENT, "wrong")
    key = t.key("imap", Endpoint("Mail.Example.test", 993, "TLS"), auth)
    assert key == t.key("imap", Endpoint("mail.example.test", 993, "STARTTLS"), auth)
    t.check(key)  # nothing recorded: passes
    expected = [5, 10, 20, 30, 30]
    for n, delay in enumerate(expected, 1):
        t.failed(key)
        clock.now += 1
        with pytest.raises(TransportError) as info:
            t.check(key)
        err = info.value
        assert err.code is ErrorCode.BACKOFF and err.step == "auth" and err.side == "imap"
        assert err.retry_after == pytest.approx(delay - 1)
        times = "once" if n == 1 else f"{n} times"
        assert err.message.startswith(f"not retried: these credentials failed {times}, last 1 s ago; ")
        clock.now += delay - 1.01
        with pytest.raises(TransportError):
            t.check(key)
        clock.now += 0.02
        t.check(key)  # the delay has passed: one more attempt may go to the server
    t.succeeded(key)
    t.failed(key)
    clock.now += 5
    t.check(key)  # the count restarted at 1 after the success: 5 s again
    # other credentials, ports and sides are independent keys
    t.failed(key)
    t.check(t.key("imap", Endpoint("mail.example.test", 993, "TLS"), PasswordAuth(AGENT, "right")))
    t.check(t.key("imap", Endpoint("mail.example.test", 143, "TLS"), auth))
    t.check(t.key("pop3", Endpoint("mail.example.test", 993, "TLS"), auth))


def test_throttle_is_thread_safe(clock):
    t = LoginThrottle(base=5, clock=clock)
    keys = [("smtp", "h", 25, str(i % 7)) for i in range(7000)]

    def hammer(part):
        for k in part:
            t.failed(k)
            try:
                t.check(k)
            except TransportError:
                pass

    threads = [threading.Thread(target=hammer, args=(keys[i::4],)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for k in set(keys):  # no failure lost to a race: each of the 7 keys counted 1000
        with pytest.raises(TransportError, match="these credentials failed 1000 times"):
            t.check(k)


def test_default_throttle_exists():
    assert isinstance(default_throttle, LoginThrottle)
    assert (default_throttle.base, default_throttle.factor, default_throttle.cap) == (5.0, 2.0, 900.0)


# --------------------------------------------------------------------------------------
# servers of our own: aiosmtpd with a counting authenticator, a drip-feeding server


class CountingSmtp:
    """aiosmtpd with AUTH checked against `users` (mutable) and every attempt counted."""

    def __init__(self, users: dict[str, str], host: str = "127.0.0.1", **kwargs) -> None:
        self.users = users
        self.attempts: list[tuple[str, str]] = []  # (mechanism, username)
        self.host, self.port = host, free_ports(1, host)[0]
        kwargs.setdefault("authenticator", self._authenticate)
        kwargs.setdefault("auth_require_tls", False)
        self._controller = Controller(_Sink(), hostname=self.host, port=self.port, **kwargs)

    def _authenticate(self, server, session, envelope, mechanism, data):
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = data.login.decode("utf-8")
        self.attempts.append((mechanism, user))
        ok = self.users.get(user) == data.password.decode("utf-8")
        return AuthResult(success=ok, handled=False)

    def __enter__(self):
        self._controller.start()
        return self

    def __exit__(self, *exc):
        self._controller.stop()


class _Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


class DripServer:
    """Accepts, then sends one byte every `interval` seconds and never a full line:
    every read succeeds, only the overall deadline can stop the client."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()[:2]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn):
        with conn:
            while not self._stop.wait(self.interval):
                try:
                    conn.sendall(b"2")
                except OSError:
                    return

    def close(self):
        self._stop.set()
        self._listener.close()


class ScriptedServer:
    """A line-based fake server: sends `greeting`, then answers each line with
    answer(line) (str, may be several CRLF lines; None closes the connection)."""

    def __init__(self, greeting: str, answer) -> None:
        self.greeting, self.answer = greeting, answer
        self.lines: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()[:2]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                conn.sendall(self.greeting.encode() + b"\r\n")
                for raw in lines:
                    line = raw.decode().rstrip("\r\n")
                    self.lines.append(line)
                    reply = self.answer(line)
                    if reply is None:
                        break
                    conn.sendall(reply.encode() + b"\r\n")

    def close(self):
        self._listener.close()


def imap_script(capabilities: str):
    def answer(line):
        tag, _, command = line.partition(" ")
        if command.upper() == "CAPABILITY":
            return f"* CAPABILITY {capabilities}\r\n{tag} OK done"
        if command.upper() == "LOGOUT":
            return f"* BYE\r\n{tag} OK bye"
        return f"{tag} BAD not in this script"
    return answer


def test_imap_starttls_not_offered(throttle):
    server = ScriptedServer("* OK fake IMAP", imap_script("IMAP4rev1 AUTH=PLAIN"))
    try:
        err, _ = expect_failure("imap", Endpoint(server.host, server.port, "STARTTLS"),
                                PasswordAuth(AGENT, "x"), step="tls", code=ErrorCode.TLS_FAILED,
                                timeout=5, throttle=throttle)
        assert err.message == "server does not offer STARTTLS"
    finally:
        server.close()


def test_imap_logindisabled_is_auth_unavailable(throttle):
    server = ScriptedServer("* OK fake IMAP", imap_script("IMAP4rev1 LOGINDISABLED"))
    try:
        err, _ = expect_failure("imap", Endpoint(server.host, server.port, "NONE"),
                                PasswordAuth(AGENT, "x"), step="auth",
                                code=ErrorCode.AUTH_UNAVAILABLE, timeout=5, throttle=throttle)
        assert "LOGINDISABLED" in err.message
        assert not any("LOGIN" in line.split(" ")[1:2] for line in server.lines)  # never sent
    finally:
        server.close()


def test_imap_non_ascii_password_uses_authenticate_plain(throttle):
    state = {}
    login = imap_script("IMAP4rev1 AUTH=PLAIN")

    def answer(line):
        tag, _, command = line.partition(" ")
        if command.upper() == "AUTHENTICATE PLAIN":
            state["tag"] = tag
            return "+ "
        if "tag" in state:
            tag = state.pop("tag")
            ok = base64.b64decode(line) == f"\0{AGENT}\0pässwort-ü".encode()
            return f"{tag} OK welcome" if ok else f"{tag} NO [AUTHENTICATIONFAILED] no"
        return login(line)

    server = ScriptedServer("* OK fake IMAP", answer)
    try:
        trace: list[CheckResult] = []
        connect_imap(Endpoint(server.host, server.port, "NONE"), PasswordAuth(AGENT, "pässwort-ü"),
                     timeout=5, throttle=throttle, trace=trace).logout()
        assert_passed(trace, "imap", "NONE")
    finally:
        server.close()


def test_pop3_stls_not_offered(throttle):
    server = ScriptedServer("+OK fake POP3", lambda line: "+OK\r\nUSER\r\n." if line == "CAPA"
                            else "-ERR not in this script")
    try:
        err, _ = expect_failure("pop3", Endpoint(server.host, server.port, "STARTTLS"),
                                PasswordAuth(AGENT, "x"), step="tls", code=ErrorCode.TLS_FAILED,
                                timeout=5, throttle=throttle)
        assert err.message == "server does not offer STLS"
    finally:
        server.close()


@pytest.fixture
def counting_smtp():
    with CountingSmtp({"agent": "pässwort-ü", "support": "s3cret-support"}) as server:
        yield server


def dovecot_logins(dovecot) -> int:
    """Connections Dovecot's login processes finished: one log line each ("Login:" or
    "Disconnected: ..."), written when the connection ends."""
    try:
        text = dovecot.log_path.read_text(errors="replace")
    except FileNotFoundError:
        return 0
    return sum(1 for line in text.splitlines() if "-login: " in line)


def wait_for(predicate, timeout: float = 3.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# --------------------------------------------------------------------------------------
# success


@pytest.mark.parametrize("security", ["NONE", "STARTTLS", "TLS"])
def test_smtp_connects(security, smtp_servers, mail_ca, mail_users, throttle):
    server = smtp_servers[security]
    trace: list[CheckResult] = []
    conn = connect_smtp(Endpoint(server.host, server.port, security),
                        PasswordAuth(AGENT, mail_users[AGENT]), timeout=5, ca_pem=mail_ca.ca_pem,
                        throttle=throttle, trace=trace)
    try:
        assert conn.noop()[0] == 250
        if security != "NONE":
            assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        conn.quit()
    assert_passed(trace, "smtp", security)


IMAP_PORTS = {"STARTTLS": "imap_port", "TLS": "imaps_port", "NONE": "imap_port"}
POP3_PORTS = {"STARTTLS": "pop3_port", "TLS": "pop3s_port", "NONE": "pop3_port"}


@pytest.mark.parametrize("security", ["STARTTLS", "TLS", "NONE"])
def test_imap_connects(security, dovecot, mail_ca, mail_users, throttle):
    trace: list[CheckResult] = []
    client = connect_imap(Endpoint(dovecot.host, getattr(dovecot, IMAP_PORTS[security]), security),
                          PasswordAuth(AGENT, mail_users[AGENT]), timeout=5, ca_pem=mail_ca.ca_pem,
                          throttle=throttle, trace=trace)
    try:
        assert b"EXISTS" in client.select_folder("INBOX", readonly=True)  # logged in: the folder opens
        assert client.socket().gettimeout() == 5
        if security != "NONE":
            assert client.socket().version() in ("TLSv1.2", "TLSv1.3")
    finally:
        client.logout()
    assert_passed(trace, "imap", security)


@pytest.mark.parametrize("security", ["STARTTLS", "TLS", "NONE"])
def test_pop3_connects(security, dovecot, mail_ca, mail_users, throttle):
    trace: list[CheckResult] = []
    conn = connect_pop3(Endpoint(dovecot.host, getattr(dovecot, POP3_PORTS[security]), security),
                        PasswordAuth("support", mail_users["support"]), timeout=5,
                        ca_pem=mail_ca.ca_pem, throttle=throttle, trace=trace)
    try:
        assert isinstance(conn.stat()[0], int)
    finally:
        conn.quit()
    assert_passed(trace, "pop3", security)


def test_probe_returns_the_trace_and_leaves(dovecot, mail_ca, mail_users, throttle):
    before = dovecot_logins(dovecot)
    trace = probe("imap", Endpoint(dovecot.host, dovecot.imaps_port, "TLS"),
                  PasswordAuth(AGENT, mail_users[AGENT]), timeout=5, ca_pem=mail_ca.ca_pem,
                  throttle=throttle)
    assert_passed(trace, "imap", "TLS")
    # Dovecot's log process writes the login line a little after the login itself.
    assert wait_for(lambda: dovecot_logins(dovecot) > before
                    and "Logged out" in dovecot.log_path.read_text().splitlines()[-1])
    assert dovecot_logins(dovecot) == before + 1
    bad = probe("pop3", Endpoint(dovecot.host, dovecot.pop3s_port, "TLS"),
                PasswordAuth(AGENT, "wrong"), timeout=5, ca_pem=mail_ca.ca_pem, throttle=throttle)
    assert outcomes(bad) == [("pop3.connect", "PASSED", "NONE"), ("pop3.tls", "PASSED", "NONE"),
                             ("pop3.auth", "FAILED", "AUTH_FAILED")]


# --------------------------------------------------------------------------------------
# failures


def test_wrong_password_smtp(smtp_servers, mail_ca, throttle, monkeypatch):
    server = smtp_servers["STARTTLS"]
    attempts = []
    real = server.handler.authenticate

    def counting(srv, session, envelope, mechanism, data):
        attempts.append(mechanism)
        return real(srv, session, envelope, mechanism, data)

    monkeypatch.setattr(server.handler, "authenticate", counting)  # read per connection
    err, _ = expect_failure("smtp", Endpoint(server.host, server.port, "STARTTLS"),
                            PasswordAuth(AGENT, "wrong"), step="auth", code=ErrorCode.AUTH_FAILED,
                            timeout=5, ca_pem=mail_ca.ca_pem, throttle=throttle)
    assert err.message == "535 5.7.8 Authentication credentials invalid"
    assert attempts == ["PLAIN"]  # one failed login on the account, not one per mechanism


def test_wrong_password_imap(dovecot, mail_ca, throttle):
    err, _ = expect_failure("imap", Endpoint(dovecot.host, dovecot.imaps_port, "TLS"),
                            PasswordAuth(AGENT, "wrong"), step="auth", code=ErrorCode.AUTH_FAILED,
                            timeout=5, ca_pem=mail_ca.ca_pem, throttle=throttle)
    assert err.message == "[AUTHENTICATIONFAILED] Authentication failed."


def test_wrong_password_pop3(dovecot, mail_ca, throttle):
    err, _ = expect_failure("pop3", Endpoint(dovecot.host, dovecot.pop3_port, "STARTTLS"),
                            PasswordAuth("support", "wrong"), step="auth", code=ErrorCode.AUTH_FAILED,
                            timeout=5, ca_pem=mail_ca.ca_pem, throttle=throttle)
    assert err.message == "-ERR [AUTH] Authentication failed."


def test_smtp_wrong_password_is_one_attempt_and_utf8_works(counting_smtp, throttle):
    """smtplib's login() would try PLAIN then LOGIN: two failures on the account."""
    ep = Endpoint(counting_smtp.host, counting_smtp.port, "NONE")
    expect_failure("smtp", ep, PasswordAuth("agent", "wrong"), step="auth",
                   code=ErrorCode.AUTH_FAILED, timeout=5, throttle=throttle)
    assert counting_smtp.attempts == [("PLAIN", "agent")]
    conn = connect_smtp(ep, PasswordAuth("agent", "pässwort-ü"), timeout=5, throttle=throttle)
    conn.quit()


def test_smtp_login_mechanism(throttle):
    with CountingSmtp({"agent": "pässwort-ü"}, auth_exclude_mechanism=["PLAIN"]) as server:
        ep = Endpoint(server.host, server.port, "NONE")
        connect_smtp(ep, PasswordAuth("agent", "pässwort-ü"), timeout=5, throttle=throttle).quit()
        expect_failure("smtp", ep, PasswordAuth("agent", "wrong"), step="auth",
                       code=ErrorCode.AUTH_FAILED, timeout=5, throttle=throttle)
        assert server.attempts == [("LOGIN", "agent"), ("LOGIN", "agent")]


@pytest.mark.parametrize("kwargs, message", [
    ({"auth_require_tls": True}, "server offers no AUTH on this connection"),
    ({"auth_exclude_mechanism": ["LOGIN", "PLAIN"]}, "no usable authentication mechanism (server offers none)"),
])
def test_smtp_auth_unavailable(kwargs, message, throttle):
    with CountingSmtp({}, **kwargs) as server:
        ep = Endpoint(server.host, server.port, "NONE")
        err, _ = expect_failure("smtp", ep, PasswordAuth("agent", "x"), step="auth",
                                code=ErrorCode.AUTH_UNAVAILABLE, timeout=5, throttle=throttle)
        assert err.message == message
        throttle.check(throttle.key("smtp", ep, PasswordAuth("agent", "x")))  # not a failed login
        assert server.attempts == []


@pytest.mark.parametrize("side, security", [
    ("smtp", "STARTTLS"), ("smtp", "TLS"), ("imap", "STARTTLS"), ("imap", "TLS"),
    ("pop3", "STARTTLS"), ("pop3", "TLS")])
def test_untrusted_certificate(side, security, smtp_servers, dovecot, other_ca, mail_users, throttle):
    if side == "smtp":
        host, port = smtp_servers[security].host, smtp_servers[security].port
    else:
        ports = IMAP_PORTS if side == "imap" else POP3_PORTS
        host, port = dovecot.host, getattr(dovecot, ports[security])
    for ca_pem in (other_ca.ca_pem, None):  # a provider CA that is not the server's; system trust
        err, trace = expect_failure(side, Endpoint(host, port, security), PasswordAuth(AGENT, "x"),
                                    step="tls", code=ErrorCode.TLS_FAILED, timeout=5,
                                    ca_pem=ca_pem, throttle=throttle)
        assert err.message == "certificate verify failed: unable to get local issuer certificate"
        assert trace[0].outcome is Outcome.PASSED


def test_hostname_is_verified(mail_ca, throttle):
    """The certificate names 127.0.0.1, ::1 and localhost: 127.0.0.2 must not pass."""
    with CountingSmtp({"agent": "x"}, host="127.0.0.2", tls_context=mail_ca.server_context()) as server:
        err, _ = expect_failure("smtp", Endpoint("127.0.0.2", server.port, "STARTTLS"),
                                PasswordAuth("agent", "x"), step="tls", code=ErrorCode.TLS_FAILED,
                                timeout=5, ca_pem=mail_ca.ca_pem, throttle=throttle)
    assert err.message == ("certificate verify failed: IP address mismatch, "
                           "certificate is not valid for '127.0.0.2'.")
    assert server.attempts == []


def test_starttls_not_offered(smtp_servers, mail_ca, throttle):
    server = smtp_servers["NONE"]
    err, _ = expect_failure("smtp", Endpoint(server.host, server.port, "STARTTLS"),
                            PasswordAuth(AGENT, "x"), step="tls", code=ErrorCode.TLS_FAILED,
                            timeout=5, ca_pem=mail_ca.ca_pem, throttle=throttle)
    assert err.message == "server does not offer STARTTLS"


def test_implicit_tls_on_a_plain_port(dovecot, mail_ca, throttle):
    err, _ = expect_failure("imap", Endpoint(dovecot.host, dovecot.imap_port, "TLS"),
                            PasswordAuth(AGENT, "x"), step="tls", code=ErrorCode.TLS_FAILED,
                            timeout=5, ca_pem=mail_ca.ca_pem, throttle=throttle)
    assert "wrong version number" in err.message


def test_starttls_on_an_implicit_tls_port(dovecot, mail_ca, throttle):
    err, _ = expect_failure("pop3", Endpoint(dovecot.host, dovecot.pop3s_port, "STARTTLS"),
                            PasswordAuth(AGENT, "x"), step="connect", code=ErrorCode.TIMEOUT,
                            timeout=0.5, ca_pem=mail_ca.ca_pem, throttle=throttle)
    assert err.message == "timed out after 0.5 s waiting for the greeting (is this an implicit-TLS port?)"


@pytest.mark.parametrize("side", ["smtp", "imap", "pop3"])
def test_closed_port(side, closed_port, throttle):
    host, port = closed_port.host, closed_port.port
    err, trace = expect_failure(side, Endpoint(host, port, "STARTTLS"), PasswordAuth(AGENT, "x"),
                                step="connect", code=ErrorCode.CONNECT_FAILED, timeout=5,
                                throttle=throttle)
    assert err.message == "connection refused"


def test_name_does_not_resolve(throttle):
    err, _ = expect_failure("imap", Endpoint("no-such-host.invalid", 993, "TLS"),
                            PasswordAuth(AGENT, "x"), step="connect",
                            code=ErrorCode.CONNECT_FAILED, timeout=5, throttle=throttle)
    assert err.message == "name does not resolve"


@pytest.mark.parametrize("side", ["smtp", "imap", "pop3"])
@pytest.mark.parametrize("security", ["NONE", "STARTTLS", "TLS"])
def test_silent_server_times_out(side, security, silent_listener, throttle):
    ep = Endpoint(silent_listener.host, silent_listener.port, security)
    start = time.monotonic()
    step = "tls" if security == "TLS" else "connect"  # TLS: the handshake gets no answer
    err, trace = expect_failure(side, ep, PasswordAuth(AGENT, "x"), step=step,
                                code=ErrorCode.TIMEOUT, timeout=0.5, throttle=throttle)
    elapsed = time.monotonic() - start
    assert 0.45 < elapsed < 1.5, elapsed
    assert err.message.startswith("timed out after 0.5 s")
    assert trace[IDS.index(step)].duration == pytest.approx(0.5, abs=0.3)


@pytest.mark.parametrize("side", ["smtp", "imap", "pop3"])
def test_drip_feeding_server_hits_the_overall_deadline(side, throttle):
    server = DripServer(interval=0.05)
    try:
        start = time.monotonic()
        err, _ = expect_failure(side, Endpoint(server.host, server.port, "NONE"),
                                PasswordAuth(AGENT, "x"), step="connect", code=ErrorCode.TIMEOUT,
                                timeout=0.3, deadline=0.6, throttle=throttle)
        assert time.monotonic() - start < 1.0
        assert err.message == "no complete answer within 0.6 s (overall limit)"
    finally:
        server.close()


def test_bad_ca_pem_is_tls_failed(smtp_servers, throttle):
    server = smtp_servers["TLS"]
    err, _ = expect_failure("smtp", Endpoint(server.host, server.port, "TLS"),
                            PasswordAuth(AGENT, "x"), step="tls", code=ErrorCode.TLS_FAILED,
                            timeout=5, ca_pem="-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
                            throttle=throttle)
    assert "could not be loaded" in err.message


# --------------------------------------------------------------------------------------
# the login throttle, end to end


def test_throttle_smtp(counting_smtp, clock, throttle):
    ep = Endpoint(counting_smtp.host, counting_smtp.port, "NONE")
    wrong, right = PasswordAuth("support", "wrong"), PasswordAuth("support", "s3cret-support")
    expect_failure("smtp", ep, wrong, step="auth", code=ErrorCode.AUTH_FAILED, timeout=5, throttle=throttle)
    assert len(counting_smtp.attempts) == 1

    clock.now += 2
    trace: list[CheckResult] = []
    with pytest.raises(TransportError) as info:
        connect_smtp(ep, wrong, timeout=5, throttle=throttle, trace=trace)
    err = info.value
    assert (err.step, err.code, err.retry_after) == ("auth", ErrorCode.BACKOFF, pytest.approx(3))
    assert err.message == "not retried: these credentials failed once, last 2 s ago; next attempt in 3 s"
    assert outcomes(trace) == [("smtp.connect", "SKIPPED", "NONE"), ("smtp.tls", "SKIPPED", "NONE"),
                               ("smtp.auth", "FAILED", "BACKOFF")]
    assert trace[2].retry_after == pytest.approx(3) and trace[2].server_message == err.message
    assert len(counting_smtp.attempts) == 1  # the server was not contacted

    connect_smtp(ep, right, timeout=5, throttle=throttle).quit()  # corrected password: at once
    assert len(counting_smtp.attempts) == 2

    clock.now += 3.1  # the delay has passed: the wrong password is tried once more
    expect_failure("smtp", ep, wrong, step="auth", code=ErrorCode.AUTH_FAILED, timeout=5, throttle=throttle)
    assert len(counting_smtp.attempts) == 3
    with pytest.raises(TransportError) as info:
        connect_smtp(ep, wrong, timeout=5, throttle=throttle)
    assert info.value.retry_after == pytest.approx(10)  # doubled

    counting_smtp.users["support"] = "wrong"  # the server side now agrees with these credentials
    clock.now += 10.1
    connect_smtp(ep, wrong, timeout=5, throttle=throttle).quit()
    counting_smtp.users["support"] = "changed again"
    expect_failure("smtp", ep, wrong, step="auth", code=ErrorCode.AUTH_FAILED, timeout=5, throttle=throttle)
    with pytest.raises(TransportError) as info:
        connect_smtp(ep, wrong, timeout=5, throttle=throttle)
    assert info.value.retry_after == pytest.approx(5)  # the success cleared the count
    assert len(counting_smtp.attempts) == 5


def test_throttle_ignores_timeouts_and_refusals(closed_port, silent_listener, throttle):
    auth = PasswordAuth(AGENT, "x")
    for _ in range(2):
        expect_failure("imap", Endpoint(closed_port.host, closed_port.port, "TLS"), auth,
                       step="connect", code=ErrorCode.CONNECT_FAILED, timeout=5, throttle=throttle)
        expect_failure("imap", Endpoint(silent_listener.host, silent_listener.port, "NONE"), auth,
                       step="connect", code=ErrorCode.TIMEOUT, timeout=0.2, throttle=throttle)


@pytest.mark.parametrize("side, port_name", [("imap", "imaps_port"), ("pop3", "pop3s_port")])
def test_throttle_dovecot(side, port_name, dovecot, mail_ca, mail_users, throttle):
    ep = Endpoint(dovecot.host, getattr(dovecot, port_name), "TLS")
    user = AGENT if side == "imap" else "support"
    wrong = PasswordAuth(user, "wrong")
    before = dovecot_logins(dovecot)
    expect_failure(side, ep, wrong, step="auth", code=ErrorCode.AUTH_FAILED, timeout=5,
                   ca_pem=mail_ca.ca_pem, throttle=throttle)
    assert wait_for(lambda: dovecot_logins(dovecot) == before + 1)
    with pytest.raises(TransportError) as info:
        CONNECTS[side](ep, wrong, timeout=5, ca_pem=mail_ca.ca_pem, throttle=throttle)
    assert info.value.code is ErrorCode.BACKOFF
    CONNECTS[side](ep, PasswordAuth(user, mail_users[user]), timeout=5, ca_pem=mail_ca.ca_pem,
                   throttle=throttle).logout() if side == "imap" else \
        CONNECTS[side](ep, PasswordAuth(user, mail_users[user]), timeout=5, ca_pem=mail_ca.ca_pem,
                       throttle=throttle).quit()
    assert wait_for(lambda: dovecot_logins(dovecot) == before + 2)
    time.sleep(0.1)
    assert dovecot_logins(dovecot) == before + 2  # the backed-off attempt never connected


# --------------------------------------------------------------------------------------
# no secret in logs or errors


def test_no_password_in_logs_or_errors(caplog, smtp_servers, dovecot, counting_smtp, mail_ca,
                                       mail_users, throttle):
    secrets = [mail_users[AGENT], mail_users["support"], "wrong-pässwort", "pässwort-ü"]
    forms = set(secrets)
    for user in (AGENT, "support", "agent"):
        for pw in secrets:
            forms.add(base64.b64encode(f"\0{user}\0{pw}".encode()).decode())
            forms.add(base64.b64encode(pw.encode()).decode())
    caplog.set_level(logging.DEBUG)
    errors: list[TransportError] = []
    traces: list[list[CheckResult]] = []

    def run(side, ep, auth):
        trace: list[CheckResult] = []
        try:
            conn = CONNECTS[side](ep, auth, timeout=5, ca_pem=mail_ca.ca_pem, throttle=throttle, trace=trace)
        except TransportError as e:
            errors.append(e)
        else:
            (conn.logout if side == "imap" else conn.quit)()
        traces.append(trace)

    for pw in (mail_users[AGENT], "wrong-pässwort"):
        for sec in ("NONE", "STARTTLS", "TLS"):
            s = smtp_servers[sec]
            run("smtp", Endpoint(s.host, s.port, sec), PasswordAuth(AGENT, pw))
            run("imap", Endpoint(dovecot.host, getattr(dovecot, IMAP_PORTS[sec]), sec), PasswordAuth(AGENT, pw))
        run("pop3", Endpoint(dovecot.host, dovecot.pop3s_port, "TLS"), PasswordAuth("support", pw.replace(
            mail_users[AGENT], mail_users["support"])))
    run("smtp", Endpoint(counting_smtp.host, counting_smtp.port, "NONE"), PasswordAuth("agent", "pässwort-ü"))
    run("smtp", Endpoint(counting_smtp.host, counting_smtp.port, "NONE"), PasswordAuth("agent", "wrong-pässwort"))
    run("smtp", Endpoint(counting_smtp.host, counting_smtp.port, "NONE"), PasswordAuth("agent", "wrong-pässwort"))

    assert any(e.code is ErrorCode.AUTH_FAILED for e in errors)
    assert any(e.code is ErrorCode.BACKOFF for e in errors)
    assert any(r.name == "mailgate.transport" for r in caplog.records)
    assert any(r.name.startswith("imapclient") for r in caplog.records)  # its LOGIN line is redacted
    texts = [r.getMessage() for r in caplog.records]
    texts += [f"{e!r} {e} {e.message}" for e in errors]
    texts += [repr(t) for t in traces]
    for text in texts:
        for form in forms:
            assert form not in text, f"secret in: {text}"


@pytest.mark.parametrize("side, port_name, message", [
    ("imap", "pop3_port", "unexpected greeting (not an IMAP server?)"),
    ("pop3", "imap_port", "unexpected greeting (not a POP3 server?): * OK [CAPABILITY"),
    ("smtp", "pop3_port", "unexpected greeting (not an SMTP server?): Dovecot"),
])
def test_wrong_protocol_on_the_port(side, port_name, message, dovecot, throttle):
    err, _ = expect_failure(side, Endpoint(dovecot.host, getattr(dovecot, port_name), "NONE"),
                            PasswordAuth(AGENT, "x"), step="connect", code=ErrorCode.PROTOCOL_ERROR,
                            timeout=5, throttle=throttle)
    assert err.message.startswith(message)
