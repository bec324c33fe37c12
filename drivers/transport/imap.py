"""Opening an authenticated IMAP connection (imapclient)."""
from __future__ import annotations

import imaplib
import logging
import re
import socket
from typing import Callable

import imapclient

from mailgate.drivers.api import CheckResult, ErrorCode

from ._attempt import Attempt
from .auth import Authenticator
from .endpoint import Endpoint
from .errors import TransportError
from .limits import MAX_ANSWER_BYTES, MAX_ANSWER_LINES, MAX_REPLY_BYTES, ImapTooLarge, human
from .throttle import LoginThrottle

__all__ = ["connect_imap"]


_UID = re.compile(rb"\bUID (\d+)", re.I)
# where imapclient sends imaplib's protocol trace
_IMAPLIB_LOG = logging.getLogger("imapclient.imaplib")
_PIECE = 16 << 10  # a literal read with progress: the bytes between two reports
# imaplib's trace messages that carry whole responses (a FETCH's message bytes)
_WHOLE_RESPONSES = ("untagged_responses[", "untagged responses dump", "\tmatched")


class _IMAP4(imaplib.IMAP4):
    """imaplib.IMAP4 over a socket we opened (and, for implicit TLS, wrapped) ourselves,
    with bounded reads.

    imaplib reads a literal of whatever size a response line announces (a greeting
    ending in "{600000000}"), and keeps every untagged response until someone asks
    for it. Every line passes through `_get_line`, a literal's announcement at its
    end: here it refuses a literal over the limit before a byte of it is read, and
    counts what the server sent since the last command (`_command`) against a
    budget: MAX_ANSWER_BYTES / MAX_ANSWER_LINES, literals up to MAX_REPLY_BYTES.
    ImapWire widens it (`allow`) for the commands that list or fetch messages.
    """

    def __init__(self, sock: socket.socket, host: str, port: int) -> None:
        self._premade = sock
        # Told of every byte read while set: the watch hub credits a transfer's deadline.
        self.progress: Callable[[int], None] | None = None
        self.allow(MAX_ANSWER_BYTES, MAX_ANSWER_LINES)
        try:
            super().__init__(host, port)  # reads the greeting and CAPABILITY (closes itself on error)
        except imaplib.IMAP4.error as exc:
            welcome = getattr(self, "welcome", None)
            if not exc.args or exc.args[0] in (None, welcome):
                # imaplib's error is just the greeting, or None when the greeting began
                # with "+" (a POP3 "+OK"): say what went wrong.
                text = welcome.decode("utf-8", "replace").strip() if welcome else ""
                raise imaplib.IMAP4.error(
                    "unexpected greeting (not an IMAP server?)" + (f": {text}" if text else "")) from exc
            raise

    def _create_socket(self, timeout):
        return self._premade

    def allow(self, size: int, lines: int, messages: dict[int, int] | None = None) -> None:
        """Until the next command the server may send `size` bytes in `lines` lines,
        literals included; literals of MAX_REPLY_BYTES, or with `messages` ({UID:
        bytes}) the messages' literals up to their size (the largest of them when a
        FETCH response does not say its UID before the literal)."""
        self._left, self._lines_left, self._messages = size, lines, messages
        self._size, self._lines = size, lines

    def _command(self, name, *args):
        self.allow(MAX_ANSWER_BYTES, MAX_ANSWER_LINES)
        return super()._command(name, *args)

    def read(self, size):
        """A literal; with `progress` set, in pieces, each told as it arrives."""
        if self.progress is None:
            return super().read(size)
        pieces = []
        while size > 0:
            piece = super().read(min(size, _PIECE))
            if not piece:
                break
            self.progress(len(piece))
            pieces.append(piece)
            size -= len(piece)
        return b"".join(pieces)

    def _get_line(self):
        line = super()._get_line()  # imaplib refuses lines over 1 MB (_MAXLINE)
        if self.progress is not None:
            self.progress(len(line) + 2)
        self._left -= len(line) + 2
        self._lines_left -= 1
        literal = imaplib.Literal.match(line) if line.endswith(b"}") else None
        if literal:
            size, limit = int(literal["size"]), MAX_REPLY_BYTES
            if self._messages is not None:
                uid = _UID.search(line)
                limit = (self._messages.get(int(uid[1])) if uid else None) or max(self._messages.values(), default=0)
            if size > limit:
                raise ImapTooLarge(
                    f"a FETCH literal of {size:,} bytes exceeds what the server announced for the message "
                    f"(at most {limit:,} bytes)" if self._messages is not None else
                    f"the server announced a literal of {size:,} bytes; the limit outside a message is {human(limit)}")
            self._left -= size
        if self._left < 0 or self._lines_left < 0:
            raise ImapTooLarge(f"the server's response exceeded {human(self._size)}" if self._left < 0
                               else f"the server's response exceeded {self._lines:,} lines")
        return line


class _IMAPClient(imapclient.IMAPClient):
    """IMAPClient whose imaplib object gets our socket.

    IMAPClient opens its own connection in `_create_IMAP4`; we open the socket
    first so that TCP connect and TLS are separate, timed phases and TLS uses our
    verifying context. IMAPClient then sets its read timeout on that socket.
    """

    def __init__(self, sock: socket.socket, host: str, port: int, *, ssl: bool, timeout: float) -> None:
        self._premade = sock
        super().__init__(host, port, ssl=ssl, timeout=timeout)
        # IMAPClient turns imaplib's trace to level 5 and sends it to the
        # imapclient.imaplib logger: at that level each untagged response is logged
        # whole, message bodies included. Level 4 traces the protocol lines (a literal
        # appears as its size only); what would still carry a whole response is
        # dropped. Off unless that logger takes DEBUG records: formatting the trace
        # costs ~40 % of a FETCH's CPU time.
        trace = self._imap._mesg
        self._imap._mesg = lambda line: None if line.startswith(_WHOLE_RESPONSES) else trace(line)
        self._imap.debug = 4 if _IMAPLIB_LOG.isEnabledFor(logging.DEBUG) else 0

    def _create_IMAP4(self):
        return _IMAP4(self._premade, self.host, self.port)


def connect_imap(endpoint: Endpoint, auth: Authenticator, *, timeout: float,
                 ca_pem: str | None = None, throttle: LoginThrottle | None = None,
                 trace: list[CheckResult] | None = None,
                 deadline: float | None = None) -> imapclient.IMAPClient:
    """Returns a connected, secured and logged-in IMAPClient; the caller logs out.

    Trace: imap.connect (TCP connect, greeting, CAPABILITY; TCP only for implicit
    TLS), imap.tls (STARTTLS+handshake, or the implicit handshake and the greeting;
    SKIPPED for NONE), imap.auth. Timeouts and errors as for connect_smtp.
    """
    att = Attempt("imap", endpoint, auth, timeout=timeout, deadline=deadline, throttle=throttle, trace=trace)
    att.check_throttle()
    client: _IMAPClient | None = None
    sock: socket.socket | None = None
    try:
        with att.step("connect"):
            sock = att.open_socket()
            if endpoint.security != "TLS":
                client = _IMAPClient(sock, endpoint.host, endpoint.port, ssl=False, timeout=timeout)
        if endpoint.security == "NONE":
            att.skip("tls", "security NONE: no TLS")
        else:
            with att.step("tls"):
                ctx = att.tls_context(ca_pem)
                if endpoint.security == "TLS":
                    tls_sock = ctx.wrap_socket(sock, server_hostname=endpoint.host)
                    sock = tls_sock
                    client = _IMAPClient(tls_sock, endpoint.host, endpoint.port, ssl=True, timeout=timeout)
                else:
                    if not client.has_capability("STARTTLS"):
                        raise TransportError("imap", "tls", ErrorCode.TLS_FAILED, "server does not offer STARTTLS")
                    client.starttls(ctx)
        with att.step("auth"):
            auth.imap(client)
    except BaseException:
        _close(client, sock)
        raise
    finally:
        att.done()
    return client


def _close(client: imapclient.IMAPClient | None, sock: socket.socket | None) -> None:
    for close in ((client.shutdown if client is not None else None),
                  (sock.close if sock is not None else None)):
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - best effort, the connection is being abandoned
                pass
