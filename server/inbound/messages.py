"""The inbound room's domain types: a message on a campaign queue, its delivery to a
consumer. The store returns them and the converters take them; no ORM row leaves
the store."""
from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass
from datetime import datetime

# A lease token is its holder's id (a consumer's stream; "" for none) followed by
# TOKEN_HEX random hex digits of its own: whoever acknowledges or changes a lease,
# on any replica, can tell its holder that it did.
TOKEN_HEX = 16


class InState(enum.Enum):
    QUEUED = "QUEUED"
    DELIVERED = "DELIVERED"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    DEAD_LETTER = "DEAD_LETTER"


@dataclass(frozen=True)
class InboundMessage:
    """A message on a campaign queue: what was parsed from its header section when it
    was queued, and where it is in the queue. `raw` holds its exact bytes where they
    were read (a claim, a get), None elsewhere (a listing)."""

    id: str
    seq: int                      # arrival order: the queue's order
    provider_id: str
    campaign: str
    message_id: str               # "<id@host>"; "" when the message has none
    conversation_id: str
    subject: str
    from_: tuple[str, ...]        # "Name <addr>" or "addr", each
    to: tuple[str, ...]
    cc: tuple[str, ...]
    reply_to: tuple[str, ...]
    date: datetime | None         # the sender's Date, for display only
    automatic: bool
    oversized: bool               # over the size limit: its body is never parsed
    size_bytes: int
    state: InState
    delivery_count: int
    receive_time: datetime
    raw: bytes | None = None


@dataclass(frozen=True)
class Delivery:
    """A message leased to a consumer under a token of its own, until a deadline."""

    message: InboundMessage
    token: str
    until: datetime

    @property
    def ack_id(self) -> str:
        return f"{self.message.id}.{self.token}"


_ACK_ID = re.compile(r"([0-9a-f-]{36})\.([0-9a-f]{%d}|[0-9a-f]{%d})" % (TOKEN_HEX, 2 * TOKEN_HEX))


def split_ack_id(ack_id: str) -> tuple[str, str] | None:
    """(message id, lease token), or None for what no delivery ever gave out (what is
    not the shape of one is never looked up)."""
    m = _ACK_ID.fullmatch(ack_id)
    return (m.group(1), m.group(2)) if m else None


def new_holder() -> str:
    return uuid.uuid4().hex[:TOKEN_HEX]


def new_token(holder: str) -> str:
    return holder + uuid.uuid4().hex[:TOKEN_HEX]


def holder_of(token: str) -> str | None:
    """The holder a token was given to (new_token), or None when it names none."""
    return token[:-TOKEN_HEX] if len(token) == 2 * TOKEN_HEX else None
