"""The IMAP conversation the watch hub needs and imapclient does not offer, on
imaplib's private calls, all of them here.

It bypasses imapclient's idle()/idle_check() and fetch() (and imaplib's public
command methods) for two reasons:

* idle_check(timeout=0) polls the kernel socket only, so a response already in
  imaplib's read buffer (or decrypted in the TLS layer) right after "+ idling" would
  never wake a selector, and the message would wait for the next IDLE renewal; it
  also reads in non-blocking mode, where half a line is an error. Here IDLE is read
  with the normal socket timeout and `ready` checks every layer before a socket goes
  back to the selector.
* fetch() sends one command and waits for its answer; `send_fetch` + `finish_fetch`
  pipeline the FETCH of the next batch while the queue commits this one (RFC 3501
  5.5), which is most of the burst's throughput (bench/inbound.py).

imapclient still opens the connection (connect_imap), logs in and EXAMINEs. The
equivalence test (tests/test_watch.py) checks that what the hub delivers is byte for
byte what imapclient's fetch(BODY.PEEK[]) returns. The private names used:
`IMAP4._command`, `_get_response`, `_command_complete`, `_untagged_response`,
`tagged_commands`, `untagged_responses`, `send`, `file` / `_readbuf` (Python 3.14),
`debug`, `shutdown`; and imap._IMAP4's `allow` (the budget of its bounded reads).
"""
from __future__ import annotations

import imaplib
import select
import socket
import ssl

import imapclient
from imapclient.response_parser import parse_fetch_response

from .limits import MAX_ANSWER_BYTES, MAX_ANSWER_LINES, MAX_LISTING_BYTES, MAX_LISTING_LINES

__all__ = ["ImapWire"]


class ImapWire:
    """One connection's IMAP conversation below imapclient. Not thread-safe: the
    mailbox's owner (one pool job at a time) uses it."""

    def __init__(self, client: imapclient.IMAPClient) -> None:
        self.client = client
        self.imap = client._imap  # imap._IMAP4: its bounded reads, its progress, its trace level

    def socket(self) -> socket.socket:
        return self.client.socket()

    # -- untagged responses the server volunteered
    def clear(self) -> None:
        """Forgets them; the server may send as much again (imap._IMAP4's budget)."""
        self.imap.untagged_responses.clear()
        self.imap.allow(MAX_ANSWER_BYTES, MAX_ANSWER_LINES)

    def expunged(self) -> int:
        return len(self.imap.untagged_responses.get("EXPUNGE", ()))

    def announced(self, known: int) -> bool:
        """The server announced more messages (EXISTS) than the `known` count, less the
        expunges it announced with them: new mail. A repeated EXISTS is not."""
        responses = self.imap.untagged_responses
        exists = responses.get("EXISTS")
        if not exists:
            return False
        try:
            count = max(int(value) for value in exists)
        except (TypeError, ValueError):
            return True  # cannot tell: look
        return count > known - len(responses.get("EXPUNGE", ()))

    def suspicious(self) -> bool:
        """Untagged NO/BAD (Dovecot: "Internal error" when the folder was replaced) or a
        UIDVALIDITY outside EXAMINE: the session's view of the folder may be stale."""
        responses = self.imap.untagged_responses
        return "NO" in responses or "BAD" in responses or "UIDVALIDITY" in responses

    def _check_bye(self) -> None:
        bye = self.imap.untagged_responses.get("BYE")
        if bye:
            raise imaplib.IMAP4.abort(text(bye[-1]))

    # -- IDLE (RFC 2177)
    def start_idle(self) -> str:
        """Sends IDLE and reads up to the "+ idling" continuation; returns the tag."""
        imap = self.imap
        tag = imap._command("IDLE")
        while imap._get_response() is not None:  # None: the continuation
            self._check_bye()
            done = imap.tagged_commands.get(tag)
            if done is not None:
                imap.tagged_commands.pop(tag, None)
                raise imaplib.IMAP4.error(f"IDLE refused: {text(done[1])}")
        return tag

    def read_idle(self, tag: str, timeout: float) -> bool:
        """Reads what the server sent during IDLE (at least one byte is waiting) and
        everything that follows at once; False when the server ended IDLE itself."""
        imap = self.imap
        while True:
            imap._get_response()
            self._check_bye()
            if not self.ready(timeout):
                break
        done = imap.tagged_commands.get(tag)  # None until the tagged answer came
        if done is None:
            return True
        imap.tagged_commands.pop(tag, None)
        if done[0] != "OK":
            raise imaplib.IMAP4.error(f"IDLE ended: {done[0]} {text(done[1])}")
        return False

    def end_idle(self, tag: str) -> None:
        """DONE, and the tagged end of IDLE."""
        imap = self.imap
        imap.send(b"DONE\r\n")
        while imap.tagged_commands.get(tag) is None:
            imap._get_response()
            self._check_bye()
        typ, data = imap.tagged_commands.pop(tag)
        if typ != "OK":
            raise imaplib.IMAP4.error(f"IDLE failed: {typ} {text(data)}")

    def ready(self, timeout: float) -> bool:
        """True when the server's next bytes can be read without waiting: already in
        imaplib's buffer, decrypted in the TLS layer, or in the kernel (end of file
        counts: reading it reports the closed connection). A selector sees only the
        kernel. `timeout` is the socket's normal timeout, restored after peeking."""
        imap = self.imap
        sock = self.client.socket()
        readbuf = getattr(imap, "_readbuf", None)  # Python >= 3.14: imaplib's own buffer
        if readbuf:
            return True
        tls = isinstance(sock, ssl.SSLSocket)
        if tls and sock.pending():
            return True
        if readbuf is None:  # Python <= 3.13: a BufferedReader (imap.file) over the socket
            sock.settimeout(0)
            try:
                if imap.file.peek(1):
                    return True
                if tls:
                    return True  # TLS reads b"" only at the end of the connection
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return False
            finally:
                sock.settimeout(timeout)
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))

    # -- FETCH
    def sizes_from(self, first_uid: int) -> dict[int, dict]:
        """UID FETCH first:* (UID RFC822.SIZE): {uid: {b"SEQ": n, b"RFC822.SIZE": size}}.
        "n:*" always matches the highest UID, even below n: callers filter. The
        answer is a listing: at most MAX_LISTING_BYTES, MAX_LISTING_LINES lines."""
        imap = self.imap
        imap.untagged_responses.clear()
        tag = imap._command("UID", "FETCH", f"{first_uid}:*", "(UID RFC822.SIZE)")  # as imap.uid(...)
        imap.allow(MAX_LISTING_BYTES, MAX_LISTING_LINES)
        typ, data = imap._command_complete("UID", tag)
        if typ != "OK":
            raise imaplib.IMAP4.error(f"UID FETCH failed: {text(data)}")
        _, data = imap._untagged_response(typ, data, "FETCH")
        return parse_fetch_response(data, True, True) if data and data != [None] else {}

    def send_fetch(self, allowed: dict[int, int]) -> str:
        """Sends UID FETCH (BODY.PEEK[]) for ascending uids ({uid: the most bytes its
        message may have}) without waiting; the tag. The answer may hold those
        messages, and MAX_ANSWER_BYTES besides."""
        imap = self.imap
        tag = imap._command("UID", "FETCH", uid_set(list(allowed)), "(BODY.PEEK[])")
        imap.allow(sum(allowed.values()) + MAX_ANSWER_BYTES, MAX_ANSWER_LINES + 2 * len(allowed), allowed)
        return tag

    def finish_fetch(self, tag: str) -> dict[int, dict]:
        """Waits for the FETCH `tag` to complete; every FETCH response read so far,
        whichever command it answered (a server may run pipelined FETCHes side by
        side), by UID."""
        imap = self.imap
        typ, data = imap._command_complete("FETCH", tag)
        if typ != "OK":
            raise imaplib.IMAP4.error(f"UID FETCH failed: {text(data)}")
        _, data = imap._untagged_response(typ, data, "FETCH")
        return parse_fetch_response(data, True, True) if data and data != [None] else {}

    def shutdown(self) -> None:
        try:
            self.imap.shutdown()  # imaplib's: IMAPClient.shutdown() adds an INFO log line per close
        except Exception:  # noqa: BLE001 - the connection is abandoned either way
            pass


def uid_set(uids: list[int]) -> str:
    """Ascending UIDs as an IMAP sequence set, runs as ranges: [1, 2, 3, 7] -> "1:3,7"."""
    runs: list[str] = []
    first = prev = uids[0]
    for uid in uids[1:] + [0]:
        if uid != prev + 1:
            runs.append(f"{first}:{prev}" if prev > first else str(first))
            first = uid
        prev = uid
    return ",".join(runs)


def text(data) -> str:
    """A server's words from an imaplib response, on one line."""
    if isinstance(data, list):
        data = data[-1] if data else b""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return " ".join(str(data or "").split())
