"""Opening an authenticated SMTP connection."""
from __future__ import annotations

import smtplib
import socket

from mailgate.drivers.api import CheckResult

from ._attempt import Attempt
from .auth import Authenticator
from .endpoint import Endpoint
from .limits import MAX_REPLY_BYTES, MAX_REPLY_LINES, SmtpTooLarge, human
from .throttle import LoginThrottle

__all__ = ["connect_smtp"]


class _SMTP(smtplib.SMTP):
    """smtplib.SMTP over a socket we opened ourselves.

    smtplib.SMTP.connect() opens the TCP connection and (SMTP_SSL) the TLS
    handshake in one go. We open the socket first so that TCP connect and TLS are
    timed and reported as separate phases, with our verifying context, and then
    hand it over through `_get_socket`, which connect() calls for its socket.
    """

    def __init__(self, sock: socket.socket, **kwargs) -> None:
        self._premade: socket.socket | None = sock
        super().__init__(**kwargs)  # no host: does not connect

    def _get_socket(self, host, port, timeout):
        sock, self._premade = self._premade, None
        return sock

    def getreply(self):
        """smtplib.SMTP.getreply, bounded. smtplib limits each line (8 KB) but reads
        "250-" continuation lines for as long as the server sends them: here a reply
        has at most MAX_REPLY_LINES lines and MAX_REPLY_BYTES in all, and a refused
        one says so (SmtpTooLarge; smtplib's "500 Line too long." reads as if the
        server had said it). Otherwise as smtplib's: (code, its lines joined by LF),
        -1 for a reply without a code, SMTPServerDisconnected at end of file."""
        if self.file is None:
            self.file = self.sock.makefile("rb")
        lines: list[bytes] = []
        size = 0
        while True:
            try:
                line = self.file.readline(smtplib._MAXLINE + 1)
            except OSError as e:
                self.close()
                raise smtplib.SMTPServerDisconnected(f"Connection unexpectedly closed: {e}")
            if not line:
                self.close()
                raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
            size += len(line)
            if len(line) > smtplib._MAXLINE or size > MAX_REPLY_BYTES or len(lines) >= MAX_REPLY_LINES:
                self.close()
                raise SmtpTooLarge(_too_large(len(line) > smtplib._MAXLINE, len(lines) >= MAX_REPLY_LINES))
            lines.append(line[4:].strip(b" \t\r\n"))
            try:
                code = int(line[:3])
            except ValueError:
                return -1, b"\n".join(lines)
            if line[3:4] != b"-":
                return code, b"\n".join(lines)


def _too_large(long_line: bool, many_lines: bool) -> str:
    if long_line:
        return f"the server's reply exceeded {human(smtplib._MAXLINE)} in one line"
    if many_lines:
        return f"the server's reply exceeded {MAX_REPLY_LINES} lines"
    return f"the server's reply exceeded {human(MAX_REPLY_BYTES)}"


def connect_smtp(endpoint: Endpoint, auth: Authenticator, *, timeout: float,
                 ca_pem: str | None = None, throttle: LoginThrottle | None = None,
                 trace: list[CheckResult] | None = None, local_hostname: str | None = None,
                 deadline: float | None = None) -> smtplib.SMTP:
    """Returns a connected, secured and authenticated SMTP connection; the caller quits it.

    Trace: smtp.connect (TCP connect and greeting; TCP only for implicit TLS),
    smtp.tls (EHLO+STARTTLS+handshake, or the implicit handshake and the greeting;
    SKIPPED for NONE), smtp.auth (EHLO+AUTH). `timeout` bounds every socket
    operation; `deadline` (default 3 x timeout) bounds the whole. Raises
    TransportError after recording the failed and the skipped phases.
    """
    att = Attempt("smtp", endpoint, auth, timeout=timeout, deadline=deadline, throttle=throttle, trace=trace)
    att.check_throttle()
    conn: _SMTP | None = None
    sock: socket.socket | None = None
    try:
        with att.step("connect"):
            sock = att.open_socket()
            # Without local_hostname smtplib calls socket.getfqdn(), a reverse DNS lookup
            # that can block for seconds; RFC 5321 allows our address as a literal instead.
            conn = _SMTP(sock, local_hostname=local_hostname or _address_literal(sock), timeout=timeout)
            conn._host = endpoint.host  # the name STARTTLS verifies the certificate against
            if endpoint.security != "TLS":
                _greet(conn, endpoint)
        if endpoint.security == "NONE":
            att.skip("tls", "security NONE: no TLS")
        else:
            with att.step("tls"):
                ctx = att.tls_context(ca_pem)
                if endpoint.security == "TLS":
                    conn._premade = ctx.wrap_socket(sock, server_hostname=endpoint.host)
                    _greet(conn, endpoint)
                else:
                    conn.ehlo_or_helo_if_needed()
                    if not conn.has_extn("starttls"):
                        raise smtplib.SMTPNotSupportedError("STARTTLS")
                    conn.starttls(context=ctx)
        with att.step("auth"):
            conn.ehlo_or_helo_if_needed()  # (again) after STARTTLS: AUTH is often offered only then
            auth.smtp(conn)
    except BaseException:
        _close(conn, sock)
        raise
    finally:
        att.done()
    return conn


def _greet(conn: _SMTP, endpoint: Endpoint) -> None:
    """Reads the greeting. (SMTP.__init__ checks for 220; connect() alone does not.)"""
    code, msg = conn.connect(endpoint.host, endpoint.port)
    if code != 220:
        raise smtplib.SMTPConnectError(code, msg)


def _address_literal(sock: socket.socket) -> str:
    addr = sock.getsockname()[0]
    return f"[IPv6:{addr}]" if ":" in addr else f"[{addr}]"


def _close(conn: smtplib.SMTP | None, sock: socket.socket | None) -> None:
    try:
        if conn is not None:
            conn.close()
        if sock is not None:
            sock.close()  # harmless if smtplib or TLS already closed or detached it
    except OSError:
        pass
