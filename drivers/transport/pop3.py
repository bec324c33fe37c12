"""Opening an authenticated POP3 connection."""
from __future__ import annotations

import poplib
import socket
from typing import Callable

from mailgate.drivers.api import CheckResult, ErrorCode

from ._attempt import Attempt
from .auth import Authenticator
from .endpoint import Endpoint
from .errors import TransportError
from .limits import (MAX_LISTING_BYTES, MAX_LISTING_LINES, MAX_REPLY_BYTES, MAX_REPLY_LINES, Pop3TooLarge,
                     human)
from .throttle import LoginThrottle

__all__ = ["connect_pop3"]


class _POP3(poplib.POP3):
    """poplib.POP3 over a socket we opened (and, for implicit TLS, wrapped) ourselves,
    so that TCP connect and TLS are separate, timed phases (see smtp._SMTP); with
    bounded reads.

    poplib refuses lines over 2,048 bytes (mail has longer ones, hostile or just
    badly made, and must still be fetched whole) but reads a multi-line response
    (`_getlongresp`: CAPA, UIDL, LIST, RETR) for as long as the server sends it.
    Here `_getline` and `_getlongresp` are bounded: a line outside a message has at
    most MAX_REPLY_BYTES, CAPA and other multi-line replies MAX_REPLY_LINES lines
    and MAX_REPLY_BYTES, a listing (UIDL, LIST) MAX_LISTING_LINES and
    MAX_LISTING_BYTES; a message is read by `retrieve`, up to the size it is allowed.
    """

    def __init__(self, sock: socket.socket, host: str, port: int, timeout: float) -> None:
        self._premade = sock
        self._long = (MAX_REPLY_BYTES, MAX_REPLY_LINES, "the server's reply")
        try:
            super().__init__(host, port, timeout)  # reads the greeting
        except BaseException:
            self.close()  # unlike smtplib and imaplib, poplib leaves socket and file open
            raise

    def _create_socket(self, timeout):
        return self._premade

    def _getline(self):
        line = self.file.readline(MAX_REPLY_BYTES + 1)
        if len(line) > MAX_REPLY_BYTES:
            raise Pop3TooLarge(f"the server's reply exceeded {human(MAX_REPLY_BYTES)} in one line")
        if not line:
            raise poplib.error_proto("-ERR EOF")
        octets = len(line)
        if line[-2:] == b"\r\n":
            return line[:-2], octets
        return line[:-1] if line[-1:] == b"\n" else line, octets

    def _getlongresp(self):
        size, count, what = self._long
        resp = self._getresp()
        lines: list[bytes] = []
        octets = 0
        line, o = self._getline()
        while line != b".":
            if line.startswith(b".."):
                o, line = o - 1, line[1:]
            octets += o
            lines.append(line)
            if octets > size or len(lines) > count:
                raise Pop3TooLarge(f"{what} exceeded {human(size)}" if octets > size else
                                   f"{what} exceeded {count:,} lines")
            line, o = self._getline()
        return resp, lines, octets

    def uidl(self, which=None):
        return self._listing(super().uidl, which)

    def list(self, which=None):
        return self._listing(super().list, which)

    def _listing(self, call, which):
        self._long = (MAX_LISTING_BYTES, MAX_LISTING_LINES, "the server's list of messages")
        try:
            return call(which)
        finally:
            self._long = (MAX_REPLY_BYTES, MAX_REPLY_LINES, "the server's reply")

    def retrieve(self, which: int, limit: int, progress: Callable[[int], None] | None = None) -> bytes:
        """RETR `which`: the message's bytes (lines ended by CRLF, dot-stuffing
        undone), refused past `limit` bytes; `progress` is told of each line's bytes.
        Into one buffer: poplib's retr() keeps a bytes object per line, tens of bytes
        each on top of what the line holds."""
        self._putcmd(f"RETR {which}")
        self._getresp()
        message = bytearray()
        while True:
            room = limit - len(message)
            line = self.file.readline(room + 3)  # a line that still fits: its stuffed "." and CRLF
            if not line:
                raise poplib.error_proto("-ERR EOF")
            if progress is not None:
                progress(len(line))
            if not line.endswith(b"\n"):
                if len(line) < room + 3:  # the connection ended within the line
                    raise poplib.error_proto("-ERR EOF")
                raise Pop3TooLarge(f"message {which} exceeded {limit:,} bytes (the size the server "
                                   "announced for it, or the limit)")
            if line in (b".\r\n", b".\n"):
                return bytes(message)
            start = 1 if line.startswith(b"..") else 0
            end = -2 if line.endswith(b"\r\n") else -1
            message += line[start:end]
            message += b"\r\n"
            if len(message) > limit:
                raise Pop3TooLarge(f"message {which} exceeded {limit:,} bytes (the size the server "
                                   "announced for it, or the limit)")


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
