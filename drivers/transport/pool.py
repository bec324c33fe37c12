"""Pooled SMTP sending: keep authenticated connections open between messages.

Opening a connection costs TCP + TLS + AUTH (several round trips, and a login on
the account each time); an outbox sending a burst through one provider should pay
that once. Connections are opened by the blocking `connect_smtp` in a worker
thread (the same code, trace and error classification as the credential checks);
the mail transactions then run on the event loop (`LoopSocket`), so a message
costs no thread hop. Several sends share one pool, each on a connection it has
checked out for itself; the pool belongs to one event loop.

Speed: the mail transaction (MAIL, RCPT, DATA) bypasses smtplib's sendmail (run in
a worker thread, as blocking libraries are here) and aiosmtplib, with a small client
of its own (`Link`, `_transact`): a thread hop, and a fight for the GIL, at each of
~8 socket operations cost more CPU per message than the exchange on the loop
(bench/smtp_client.py prints both side by side). It must behave as smtplib does:
tests/test_smtp_pool.py sends the same transactions through both
(mailgate.testing.oracles.smtplib_send) and compares what the server received and
the outcomes.

Rules:
* A reused connection may have been closed by the server while it idled. If it
  turns out broken before any byte of the body was sent (disconnect, reset, or a
  421 "closing" reply to MAIL/RCPT/DATA), the message goes out once more on a
  fresh connection. After the body started, never: that could deliver it twice.
* After any failure the connection is closed, never reused (whatever state the
  server is in, RSET is not worth trusting).
* Connections idle longer than `idle_timeout` are closed (QUIT) rather than
  reused; at most `max_idle_per_key` are kept per key.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
import smtplib
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from mailgate.drivers.api import ErrorCode

from .auth import Authenticator
from .endpoint import Endpoint
from .errors import TransportError, _decode, classify
from .limits import MAX_REPLY_BYTES, MAX_REPLY_LINES, MIN_BYTES_PER_SECOND, SmtpTooLarge
from .loopsock import LoopSocket
from .smtp import _too_large, connect_smtp
from .throttle import LoginThrottle

__all__ = ["SmtpPool", "SendResult", "SendError"]

log = logging.getLogger("mailgate.transport")

# As smtplib: a reply line is at most this long (and a reply as limits.py says).
_MAX_LINE = smtplib._MAXLINE
_LEADING_DOT = re.compile(rb"(?m)^\.")


@dataclass(frozen=True)
class SendResult:
    code: int  # the final reply code, 250
    message: str  # the server's words for the accepted message ("2.0.0 OK queued as X")
    # recipients refused while others were accepted: address -> (code, words)
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)


class SendError(Exception):
    """A message was not sent.

    code: the SMTP reply code, 0 when no reply says why (connection, TLS, timeout,
    local refusal). transient: a later retry may succeed (4xx, connection trouble,
    login problems: the message should wait); False for 5xx refusals. auth_failed:
    the login failed or is impossible (the provider needs attention; the message
    waits). error_code: the transport's classification for failures before the
    transaction (ErrorCode.NONE for replies within it). refused: every refused
    recipient when all were refused. retry_after: seconds, for a login backed off.
    The message is the server's words or a local description, never credentials.
    """

    def __init__(self, code: int, message: str, *, transient: bool, auth_failed: bool = False,
                 error_code: ErrorCode = ErrorCode.NONE, retry_after: float | None = None,
                 refused: dict[str, tuple[int, str]] | None = None) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.transient = transient
        self.auth_failed = auth_failed
        self.error_code = error_code
        self.retry_after = retry_after
        self.refused = refused or {}

    def __str__(self) -> str:
        return f"{self.code} {self.message}" if self.code else self.message

    def __reduce__(self):  # pickle/copy: the keyword-only arguments are not in self.args
        keywords = {k: v for k, v in vars(self).items() if k not in ("code", "message")}
        return functools.partial(SendError, **keywords), (self.code, self.message)

    def __repr__(self) -> str:
        return (f"SendError(code={self.code}, message={self.message!r}, transient={self.transient}, "
                f"auth_failed={self.auth_failed}, error_code={self.error_code.name})")


class _Replaceable(Exception):
    """Internal: the connection broke before the body was sent; another may carry the message."""

    def __init__(self, error: SendError) -> None:
        super().__init__(error)
        self.error = error


class Link:
    """A logged-in SMTP connection, driven by the event loop: what remains of the
    smtplib.SMTP that connect_smtp opened (its socket and the EHLO answer)."""

    def __init__(self, conn: smtplib.SMTP) -> None:
        sock, conn.sock, conn.file = conn.sock, None, None  # ours now: smtplib must not close it
        # The end of the data goes in a write of its own (after the handover): without
        # this, Nagle's algorithm holds it until the body is acknowledged (~40 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.does_esmtp = bool(conn.does_esmtp)
        self.features = dict(conn.esmtp_features)
        self.io = LoopSocket(sock)

    def has_extn(self, name: str) -> bool:
        return name.lower() in self.features

    async def command(self, line: str, timeout: float) -> tuple[int, bytes]:
        if "\r" in line or "\n" in line:  # addresses are checked before; never send a smuggled command
            raise SendError(0, "line break in an SMTP command", transient=False)
        self.io.deadline = asyncio.get_running_loop().time() + timeout
        await self.io.sendall(line.encode("utf-8") + b"\r\n")  # non-ASCII only with SMTPUTF8 (_mail_options)
        return await self.reply()

    async def reply(self) -> tuple[int, bytes]:
        """(code, text) of the server's next reply, its lines joined by LF, as smtplib;
        bounded as connect_smtp's (smtp._SMTP.getreply): SmtpTooLarge past them."""
        lines = []
        size = 0
        while True:
            try:
                line = await self.io.readline(_MAX_LINE)
            except EOFError:
                raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed") from None
            except ValueError:
                raise SmtpTooLarge(_too_large(True, False)) from None
            size += len(line)
            if size > MAX_REPLY_BYTES or len(lines) >= MAX_REPLY_LINES:
                raise SmtpTooLarge(_too_large(False, len(lines) >= MAX_REPLY_LINES))
            lines.append(line[4:].strip(b" \t\r\n"))
            code = line[:3]
            if not code.isdigit():
                raise smtplib.SMTPServerDisconnected(f"not an SMTP reply: {line[:40]!r}")
            if line[3:4] != b"-":
                return int(code), b"\n".join(lines)

    def quit(self) -> None:
        """QUIT as a courtesy, not waited for, and close."""
        self.io.send_nowait(b"QUIT\r\n")
        self.io.close()


@dataclass
class _Idle:
    link: Link
    identity: tuple  # (endpoint, username, ca_pem) the connection was opened with
    since: float  # clock() when it was returned to the pool


class SmtpPool:
    def __init__(self, *, max_idle_per_key: int = 4, idle_timeout: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_idle_per_key = max_idle_per_key
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._idle: dict[str, list[_Idle]] = {}  # oldest first
        # discard(key) bumps the key's generation: connections checked out before
        # it (settings since changed) are closed when they come back, not pooled.
        self._generation: dict[str, int] = {}
        self._closed = False
        self._counts = {"opened": 0, "reused": 0, "replaced": 0}

    async def send(self, key: str, endpoint: Endpoint, auth: Authenticator, *, timeout: float,
                   ca_pem: str | None, mail_from: str, recipients: list[str], raw: bytes,
                   throttle: LoginThrottle | None = None,
                   run_blocking: Callable[..., Awaitable[Any]] = asyncio.to_thread,
                   handover: Callable[[], Awaitable[None]] | None = None) -> SendResult:
        """Sends `raw` (CRLF line ends, not dot-stuffed) from `mail_from` to `recipients`
        (bare addresses, as api.Envelope has them) over a pooled connection for `key`;
        a new one is opened through `run_blocking` (a worker pool). `handover`
        (api.Envelope.handover) is awaited before the end of the data; if it raises,
        the connection is closed without it. Raises SendError."""
        if not recipients:
            raise ValueError("no recipients")
        identity = (endpoint, auth.username, ca_pem)
        idle, generation = self._checkout(key, identity)
        if idle is not None:
            try:
                return await self._send_on(key, generation, identity, idle.link, timeout,
                                           mail_from, recipients, raw, handover)
            except _Replaceable as stale:
                self._counts["replaced"] += 1
                log.debug("smtp pool %s: reused connection to %s broken (%s); sending on a new one",
                          key, endpoint, stale.error)
        link = await self._open(key, endpoint, auth, timeout, ca_pem, throttle, run_blocking)
        try:
            return await self._send_on(key, generation, identity, link, timeout, mail_from, recipients, raw,
                                       handover)
        except _Replaceable as broken:  # a fresh connection: nothing to fall back on
            raise broken.error from broken.__cause__

    def discard(self, key: str) -> None:
        """Closes and forgets the idle connections of `key`; those in use are closed
        when they come back (the provider changed or was deleted)."""
        self._generation[key] = self._generation.get(key, 0) + 1
        _quit_all(self._idle.pop(key, []))

    def close(self) -> None:
        """Closes every idle connection; connections in use are closed when they come back."""
        self._closed = True
        drop = [idle for entries in self._idle.values() for idle in entries]
        self._idle.clear()
        _quit_all(drop)

    def stats(self) -> dict[str, int]:
        """{"opened", "reused", "replaced" (reused but broken), "idle" (now)}."""
        return {**self._counts, "idle": sum(len(v) for v in self._idle.values())}

    def idle_sockets(self, key: str) -> list[socket.socket]:
        """The sockets of the key's idle connections, most recently used last (to look
        at their options, or to break them as a network would)."""
        return [idle.link.io.sock for idle in self._idle.get(key, [])]

    # ----------------------------------------------------------------------------------

    def _checkout(self, key: str, identity: tuple) -> tuple[_Idle | None, int]:
        """The key's most recently used live connection (None if none) and the key's
        generation. Expired connections of every key are closed on the way."""
        found: _Idle | None = None
        generation = self._generation.get(key, 0)
        drop = self._expire(self._clock())
        entries = self._idle.get(key, [])
        while entries and found is None:
            candidate = entries.pop()  # newest: the least likely to have been dropped
            # The key should change with the settings; should it not, a connection
            # to another server or as another user is never used for this message.
            if candidate.identity == identity:
                found = candidate
            else:
                drop.append(candidate)
        if not entries:
            self._idle.pop(key, None)
        if found is not None:
            self._counts["reused"] += 1
        _quit_all(drop)
        return found, generation

    def _expire(self, now: float) -> list[_Idle]:
        """Removes and returns the connections idle too long."""
        drop: list[_Idle] = []
        for key in list(self._idle):
            entries = self._idle[key]
            fresh = [e for e in entries if now - e.since <= self.idle_timeout]
            if len(fresh) != len(entries):
                drop += [e for e in entries if now - e.since > self.idle_timeout]
                if fresh:
                    self._idle[key] = fresh
                else:
                    del self._idle[key]
        return drop

    def _checkin(self, key: str, generation: int, idle: _Idle) -> None:
        if self._closed or self._generation.get(key, 0) != generation:
            drop = [idle]
        else:
            entries = self._idle.setdefault(key, [])
            entries.append(idle)
            excess = max(len(entries) - self.max_idle_per_key, 0)
            drop = entries[:excess]
            del entries[:excess]
        _quit_all(drop)

    async def _open(self, key: str, endpoint: Endpoint, auth: Authenticator, timeout: float,
                    ca_pem: str | None, throttle: LoginThrottle | None,
                    run_blocking: Callable[..., Awaitable[Any]]) -> Link:
        try:
            conn = await run_blocking(functools.partial(connect_smtp, endpoint, auth, timeout=timeout,
                                                        ca_pem=ca_pem, throttle=throttle))
        except TransportError as error:  # connect_smtp has logged it
            raise _from_transport(error) from error
        self._counts["opened"] += 1
        log.debug("smtp pool %s: opened a connection to %s", key, endpoint)
        return Link(conn)

    async def _send_on(self, key: str, generation: int, identity: tuple, link: Link,
                       timeout: float, mail_from: str, recipients: list[str], raw: bytes,
                       handover: Callable[[], Awaitable[None]] | None) -> SendResult:
        try:
            result = await _transact(link, timeout, mail_from, recipients, raw, handover)
        except BaseException as exc:  # cancelled too: a connection left mid-transaction is useless
            link.quit()
            error = exc.error if isinstance(exc, _Replaceable) else exc
            if isinstance(error, SendError):
                log.debug("smtp pool %s: send via %s failed: %r", key, identity[0], error)
            raise
        self._checkin(key, generation, _Idle(link, identity, self._clock()))
        return result


async def _transact(link: Link, timeout: float, mail_from: str, recipients: list[str],
                    raw: bytes, handover: Callable[[], Awaitable[None]] | None = None) -> SendResult:
    """One mail transaction on `link`: MAIL, RCPT for each recipient, DATA.

    We must know whether a failure came before the body was sent (then another
    connection may retry) and want the refusals per recipient. Raises SendError,
    or _Replaceable for a broken connection before the body.
    """
    body_started = False

    def reply_error(code: int, resp: bytes) -> SendError | _Replaceable:
        error = SendError(code, _decode(resp), transient=code < 500)
        return _Replaceable(error) if code == 421 and not body_started else error

    try:
        options = _mail_options(link, mail_from, recipients, raw)
        code, resp = await link.command(f"MAIL FROM:<{mail_from}>"
                                        + "".join(" " + o for o in options), timeout)
        if code != 250:
            raise reply_error(code, resp)
        refused: dict[str, tuple[int, str]] = {}
        for rcpt in recipients:
            code, resp = await link.command(f"RCPT TO:<{rcpt}>", timeout)
            if code == 421:  # the server is closing the connection
                raise reply_error(code, resp)
            if code not in (250, 251):
                refused[rcpt] = (code, _decode(resp))
        if len(refused) == len(recipients):
            # Report a temporary refusal if there is one: retrying may deliver to that recipient.
            code, words = next((r for r in refused.values() if r[0] < 500), next(iter(refused.values())))
            raise SendError(code, words, transient=code < 500, refused=refused)
        code, resp = await link.command("DATA", timeout)
        if code != 354:
            raise reply_error(code, resp)
        body_started = True
        body = _LEADING_DOT.sub(b"..", raw) if raw.startswith(b".") or b"\n." in raw else raw
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        loop = asyncio.get_running_loop()
        link.io.deadline = loop.time() + timeout + len(body) / MIN_BYTES_PER_SECOND
        if handover is None:
            await link.io.sendall(body + b".\r\n")
        else:
            await link.io.sendall(body)
            try:
                await handover()
            except BaseException:
                # Closed before the final dot (and with no QUIT, which would be more
                # body): a server delivers nothing of an unfinished DATA (RFC 5321 4.1.1.4).
                link.io.close()
                raise
            link.io.deadline = loop.time() + timeout
            await link.io.sendall(b".\r\n")
        code, resp = await link.reply()
        if code != 250:
            raise reply_error(code, resp)
        return SendResult(code, _decode(resp), refused)
    except (smtplib.SMTPException, OSError) as exc:
        if isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code > 0:
            raise SendError(exc.smtp_code, _decode(exc.smtp_error), transient=exc.smtp_code < 500) from exc
        # Connection trouble: a closed connection (SMTPServerDisconnected), a socket or
        # TLS error (OSError), a timeout (TimeoutError, an OSError too).
        trouble = classify(exc, "smtp", "session", timeout=timeout)  # TIMEOUT or PROTOCOL_ERROR
        error = SendError(0, trouble.message, transient=True, error_code=trouble.code)
        lost = isinstance(exc, smtplib.SMTPServerDisconnected) or not isinstance(exc, smtplib.SMTPException)
        # A timeout is not the sign of a connection dropped while idle, and a retry
        # would double the wait: only a closed or reset connection is replaced.
        if lost and not body_started and trouble.code is not ErrorCode.TIMEOUT:
            raise _Replaceable(error) from exc
        raise error from exc


def _mail_options(conn: Link, mail_from: str, recipients: list[str], raw: bytes) -> list[str]:
    """MAIL FROM parameters: SMTPUTF8 and BODY=8BITMIME only when needed and offered."""
    utf8_addresses = not all(a.isascii() for a in (mail_from, *recipients))
    end = raw.find(b"\r\n\r\n")
    utf8_headers = not raw[:end if end >= 0 else len(raw)].isascii()  # RFC 6532 headers
    if utf8_addresses and not conn.has_extn("smtputf8"):
        raise SendError(0, "the server does not support SMTPUTF8, needed for non-ASCII addresses",
                        transient=False)
    if not conn.does_esmtp:
        return []
    options = []
    if (utf8_addresses or utf8_headers) and conn.has_extn("smtputf8"):
        options.append("SMTPUTF8")
    # Without 8BITMIME on offer an 8-bit body is sent as it is: most servers take it,
    # and refusing locally would strand the message for good.
    if not raw.isascii() and conn.has_extn("8bitmime"):
        options.append("BODY=8BITMIME")
    if conn.has_extn("size"):  # lets the server refuse an oversized message before the upload
        options.append(f"SIZE={len(raw)}")
    return options


def _from_transport(error: TransportError) -> SendError:
    """A failure to open the connection: the message waits (transient)."""
    code, message = 0, error.message
    cause = error.__cause__
    if isinstance(cause, smtplib.SMTPResponseException) and cause.smtp_code > 0:
        code, message = cause.smtp_code, _decode(cause.smtp_error)
    return SendError(code, message, transient=True,
                     auth_failed=error.code in (ErrorCode.AUTH_FAILED, ErrorCode.AUTH_UNAVAILABLE),
                     error_code=error.code, retry_after=error.retry_after)


def _quit_all(entries: list[_Idle]) -> None:
    for idle in entries:
        idle.link.quit()
