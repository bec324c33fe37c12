"""Message-IDs (RFC 5322 3.6.4) as mail really carries them: what sending makes and
checks, and what receiving reads to tie replies to their conversation."""
from __future__ import annotations

import re
from email import _header_value_parser as _hvp

# A message id longer than this could not sit on one header line (998 octets).
MAX_MESSAGE_ID = 900

# atext and dots either side of one "@", or a [domain literal] on the right.
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+"
MSG_ID = re.compile(rf"<{_ATEXT}@(?:{_ATEXT}|\[[\x21-\x5a\x5e-\x7e]*\])>")


def normalize_message_id(value: str) -> str | None:
    """`value` as "<id@host>" (angle brackets added when missing), or None when it is
    not a usable Message-ID (spaces, line breaks, no "@", non-ASCII, too long)."""
    value = value.strip()
    if not value.startswith("<"):
        value = f"<{value}>"
    if len(value) > MAX_MESSAGE_ID or not MSG_ID.fullmatch(value):
        return None
    # The email package must read it back as exactly this id, or it cannot be sent.
    try:
        token, rest = _hvp.get_msg_id(value)
    except Exception:  # HeaderParseError, or IndexError on some garbage
        return None
    return value if not rest and str(token) == value else None
