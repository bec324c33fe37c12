"""How much a mail server may make us read, and the error for one that sends more.

A server says how much is coming (an IMAP literal's `{600000000}`, a message's
RFC822.SIZE, a POP3 LIST size) or just keeps sending (a "250-" continuation line
after another, an endless listing). Every read from an SMTP, IMAP or POP3 server is
bounded by one of the limits below; a size the server announces is checked before
any of it is read. Past a bound the read is refused with a TooLarge error of the
protocol's library (so the code around it treats it like any broken reply), which
classify() turns into the transport's PROTOCOL_ERROR with the reason, and the
connection is dropped.
"""
from __future__ import annotations

import imaplib
import poplib
import smtplib

__all__ = [
    "MAX_MESSAGE_BYTES", "MAX_REPLY_BYTES", "MAX_REPLY_LINES", "MAX_ANSWER_BYTES", "MAX_ANSWER_LINES",
    "MAX_LISTING_BYTES", "MAX_LISTING_LINES", "TooLarge", "SmtpTooLarge", "ImapTooLarge", "Pop3TooLarge",
    "allowance", "human",
]

KB, MB = 1 << 10, 1 << 20

# One message: an IMAP FETCH BODY[] literal, a POP3 RETR. The inbound queue's default
# limit too: mail announced as larger is not downloaded (the watchers skip it).
MAX_MESSAGE_BYTES = 50 * MB
# A transfer of a message keeps its deadline while it moves: each byte that arrives moves the
# deadline on by the time it takes at this rate (a server that announces much and sends
# nothing gains nothing).
MIN_BYTES_PER_SECOND = 50_000
# Anything else a server says in one piece: an SMTP reply (all its lines), a POP3
# status line or CAPA listing, an IMAP literal outside a message (greeting, CAPABILITY).
MAX_REPLY_BYTES = 64 * KB
MAX_REPLY_LINES = 100  # of an SMTP reply or a POP3 CAPA listing
# IMAP: everything the server sends between one command and the next (its untagged
# responses are kept until read), for commands other than those below. Generous: a
# mailbox marked read elsewhere announces a FETCH (FLAGS) line for every message.
MAX_ANSWER_BYTES = 1 * MB
MAX_ANSWER_LINES = 10_000
# A list of the messages in a mailbox: IMAP UID FETCH (UID RFC822.SIZE), POP3 UIDL and LIST.
MAX_LISTING_BYTES = 16 * MB
MAX_LISTING_LINES = 250_000


class TooLarge(Exception):
    """A server sent, or announced, more than a limit allows; `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SmtpTooLarge(TooLarge, smtplib.SMTPException):
    pass


class ImapTooLarge(TooLarge, imaplib.IMAP4.abort):
    pass


class Pop3TooLarge(TooLarge, poplib.error_proto):
    pass


def allowance(announced: int, limit: int = MAX_MESSAGE_BYTES) -> int:
    """The most bytes a message the server announced as `announced` bytes may have:
    a little more (1/8 + 64 KB, for servers whose RFC822.SIZE or LIST size is an
    estimate), never more than `limit`."""
    return min(limit, max(announced, 0) + max(announced, 0) // 8 + 64 * KB)


def human(n: int) -> str:
    """64 KB, 50 MB, 1,234 bytes."""
    for unit, name in ((MB, "MB"), (KB, "KB")):
        if n >= unit and n % unit == 0:
            return f"{n // unit:,} {name}"
    return f"{n:,} bytes"
