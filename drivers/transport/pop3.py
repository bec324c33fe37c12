"""Opening an authenticated POP3 connection."""
from __future__ import annotations

import poplib
import socket

from mailgate.drivers.api import CheckResult, ErrorCode

from ._attempt import Attempt
from .auth import Authenticator
from .endpoint import Endpoint
from .errors import TransportError
from .throttle import LoginThrottle

__all__ = ["connect_pop3"]


class _POP3(poplib.POP3):
    """poplib.POP3 over a socket we opened (and, for implicit TLS, wrapped) ourselves,
    so that TCP connect and TLS are separate, timed phases (see smtp._SMTP)."""

    def __init__(self, sock: socket.socket, host: str, port: int, timeout: float) -> None:
        self._premade = sock
        try:
            super().__init__(host, port, timeout)  # reads the greeting
        except BaseException:
            self.close()  # unlike smtplib and imaplib, poplib leaves socket and file open
            raise

    def _create_socket(self, timeout):
        return self._premade

    # poplib refuses lines over 2,048 bytes; mail has longer ones (hostile or just
    # badly made) and must still be fetched whole.
    MAX_LINE = 64 << 20

    def _getline(self):
        line = self.file.readline(self.MAX_LINE + 1)
        if len(line) > self.MAX_LINE:
            raise poplib.error_proto("line too long")
        if not line:
            raise poplib.error_proto("-ERR EOF")
        octets = len(line)
        if line[-2:] == b"\r\n":
            return line[:-2], octets
        return line[:-1] if line[-1:] == b"\n" else line, octets


def connect_pop3(endpoint: Endpoint, auth: Authenticator, *, timeout: float,
                 ca_pem: str | None = None, throttle: LoginThrottle | None = None,
                 trace: list[CheckResult] | None = None,
                 deadline: float | None = None) -> poplib.POP3:
    """Returns a connected, secured and logged-in POP3 connection; the caller quits it.

    Trace: pop3.connect (TCP connect and greeting; TCP only for implicit TLS),
    pop3.tls (CAPA+STLS+handshake, or the implicit handshake and the greeting;
    SKIPPED for NONE), pop3.auth. Timeouts and errors as for connect_smtp.
    """
    att = Attempt("pop3", endpoint, auth, timeout=timeout, deadline=deadline, throttle=throttle, trace=trace)
    att.check_throttle()
    conn: _POP3 | None = None
    sock: socket.socket | None = None
    try:
        with att.step("connect"):
            sock = att.open_socket()
            if endpoint.security != "TLS":
                conn = _POP3(sock, endpoint.host, endpoint.port, timeout)
        if endpoint.security == "NONE":
            att.skip("tls", "security NONE: no TLS")
        else:
            with att.step("tls"):
                ctx = att.tls_context(ca_pem)
                if endpoint.security == "TLS":
                    sock = ctx.wrap_socket(sock, server_hostname=endpoint.host)
                    conn = _POP3(sock, endpoint.host, endpoint.port, timeout)
                else:
                    if "STLS" not in _capabilities(conn):
                        raise TransportError("pop3", "tls", ErrorCode.TLS_FAILED, "server does not offer STLS")
                    conn.stls(ctx)
        with att.step("auth"):
            auth.pop3(conn)
    except BaseException:
        _close(conn, sock)
        raise
    finally:
        att.done()
    return conn


def _capabilities(conn: poplib.POP3) -> dict:
    try:
        return conn.capa()
    except poplib.error_proto:  # CAPA is optional (RFC 2449); without it, no STLS either
        return {}


def _close(conn: poplib.POP3 | None, sock: socket.socket | None) -> None:
    for close in ((conn.close if conn is not None else None), (sock.close if sock is not None else None)):
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - best effort, the connection is being abandoned
                pass
