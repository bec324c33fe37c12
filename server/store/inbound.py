"""Named store operations on the campaign queues and mailbox positions. Each takes
the caller's session and never commits. Claims lock with SKIP LOCKED, so several
replicas on one PostgreSQL share a queue without handing a message out twice."""
from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable

from sqlalchemy import case, or_, select, update
from sqlalchemy.orm import Session

from ..errors import FailedPrecondition, NotFound
from .models import InboundRow, MailboxPositionRow, MessageRefRow


class InState(enum.Enum):
    QUEUED = "QUEUED"
    DELIVERED = "DELIVERED"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    DEAD_LETTER = "DEAD_LETTER"


@dataclass(frozen=True)
class Arrival:
    """A fetched message, parsed just enough to queue it."""

    uid: int
    raw: bytes
    message_id: str
    content_hash: str
    headers: dict[str, Any]
    references: tuple[str, ...]  # In-Reply-To and References, to find its conversation
    automatic: bool
    oversized: bool


@dataclass(frozen=True)
class Delivery:
    row: InboundRow
    token: str

    @property
    def ack_id(self) -> str:
        return f"{self.row.id}.{self.token}"


def split_ack_id(ack_id: str) -> tuple[str, str] | None:
    mid, _, token = ack_id.partition(".")
    return (mid, token) if mid and token else None


class InboundStore:
    def __init__(self, session: Session):
        self.session = session

    # -- the watcher side
    def position(self, provider_id: str, folder: str) -> tuple[int | None, int]:
        pos = self.session.get(MailboxPositionRow, (provider_id, folder))
        return (pos.uidvalidity, pos.last_uid) if pos else (None, 0)

    def enqueue(self, provider_id: str, campaign: str, folder: str, uidvalidity: int,
                arrivals: Iterable[Arrival], now: datetime, threaded: bool) -> list[str]:
        """Commits arrivals to the campaign queue (by the caller's transaction) and
        moves the mailbox position; returns the ids queued. A message is queued once:
        by its UID in this UIDVALIDITY, and across a resync by Message-ID together
        with a hash of its bytes (never by Message-ID alone: senders reuse them)."""
        queued, last_uid = [], 0
        for a in arrivals:
            last_uid = max(last_uid, a.uid)
            seen_uid = self.session.scalar(select(InboundRow.id).where(
                InboundRow.provider_id == provider_id, InboundRow.folder == folder,
                InboundRow.uidvalidity == uidvalidity, InboundRow.uid == a.uid))
            same_mail = self.session.scalar(select(InboundRow.id).where(
                InboundRow.provider_id == provider_id, InboundRow.message_id == a.message_id,
                InboundRow.content_hash == a.content_hash).limit(1))
            if seen_uid or same_mail:
                continue
            conversation = (self._conversation(a.references) if threaded else None) or str(uuid.uuid4())
            row = InboundRow(
                id=str(uuid.uuid4()), provider_id=provider_id, campaign=campaign, folder=folder,
                uidvalidity=uidvalidity, uid=a.uid, message_id=a.message_id, content_hash=a.content_hash,
                conversation_id=conversation, headers=a.headers, automatic=a.automatic, oversized=a.oversized,
                size_bytes=len(a.raw), raw=a.raw, state=InState.QUEUED.value, delivery_count=0,
                receive_time=now)
            self.session.add(row)
            if a.message_id and self.session.get(MessageRefRow, a.message_id) is None:
                self.session.add(MessageRefRow(message_id=a.message_id, conversation_id=conversation,
                                               references=list(a.references), create_time=now))
            self.session.flush()
            queued.append(row.id)
        pos = self.session.get(MailboxPositionRow, (provider_id, folder))
        if pos is None:
            self.session.add(MailboxPositionRow(provider_id=provider_id, folder=folder,
                                                uidvalidity=uidvalidity, last_uid=last_uid))
        elif pos.uidvalidity != uidvalidity:
            pos.uidvalidity, pos.last_uid = uidvalidity, last_uid
        else:
            pos.last_uid = max(pos.last_uid, last_uid)
        self.session.flush()
        return queued

    def _conversation(self, references: tuple[str, ...]) -> str | None:
        """The conversation of the newest known message this one refers to."""
        for ref in reversed(references):
            known = self.session.get(MessageRefRow, ref)
            if known:
                return known.conversation_id
        return None

    # -- the consumer side
    def claim(self, *, campaign: str | None, provider_ids: list[str], consumer: str, limit: int,
              deadline: timedelta, now: datetime, max_deliveries: int) -> list[Delivery]:
        q = select(InboundRow).where(or_(
            InboundRow.state == InState.QUEUED.value,
            (InboundRow.state == InState.DELIVERED.value) & (InboundRow.lease_until < now)))
        q = q.where(InboundRow.campaign == campaign) if campaign else q.where(
            InboundRow.provider_id.in_(provider_ids))
        q = q.order_by(InboundRow.seq).limit(limit).with_for_update(skip_locked=True)
        out = []
        for row in self.session.scalars(q):
            if row.delivery_count >= max_deliveries:  # given out too often, never acknowledged
                row.state, row.lease_token, row.lease_until = InState.DEAD_LETTER.value, None, None
                continue
            token = uuid.uuid4().hex[:16]
            row.state, row.lease_token, row.lease_consumer = InState.DELIVERED.value, token, consumer
            row.lease_until = now + deadline
            row.delivery_count += 1
            out.append(Delivery(row, token))
        self.session.flush()
        return out

    def ack(self, pairs: list[tuple[str, str]], now: datetime) -> int:
        done = 0
        for mid, token in pairs:
            done += self.session.execute(update(InboundRow).where(
                InboundRow.id == mid, InboundRow.lease_token == token,
                InboundRow.state == InState.DELIVERED.value).values(
                state=InState.ACKNOWLEDGED.value, ack_time=now, lease_until=None)).rowcount
        return done

    def extend(self, pairs: list[tuple[str, str, int]], now: datetime) -> None:
        """New deadlines; 0 seconds gives the message back to the queue at once."""
        for mid, token, seconds in pairs:
            values: dict[str, Any] = ({"lease_until": now + timedelta(seconds=seconds)} if seconds > 0 else
                                      {"state": InState.QUEUED.value, "lease_token": None, "lease_until": None})
            self.session.execute(update(InboundRow).where(
                InboundRow.id == mid, InboundRow.lease_token == token,
                InboundRow.state == InState.DELIVERED.value).values(**values))

    def release(self, pairs: list[tuple[str, str]], max_deliveries: int) -> None:
        """A consumer went away: its unacknowledged messages go back to the queue, or
        to the dead letters when they have been delivered too often already."""
        for mid, token in pairs:
            self.session.execute(update(InboundRow).where(
                InboundRow.id == mid, InboundRow.lease_token == token,
                InboundRow.state == InState.DELIVERED.value).values(
                state=case((InboundRow.delivery_count >= max_deliveries, InState.DEAD_LETTER.value),
                           else_=InState.QUEUED.value),
                lease_token=None, lease_until=None))

    def requeue(self, message_id: str) -> InboundRow:
        row = self.get(message_id)
        if row.state != InState.DEAD_LETTER.value:
            raise FailedPrecondition(f"inbound message {message_id!r} is {row.state}, not dead-lettered",
                                     reason="NOT_DEAD_LETTER")
        row.state, row.delivery_count, row.lease_token, row.lease_until = InState.QUEUED.value, 0, None, None
        self.session.flush()
        return row

    # -- reads
    def get(self, message_id: str) -> InboundRow:
        row = self.session.scalar(select(InboundRow).where(InboundRow.id == message_id))
        if row is None:
            raise NotFound(f"inbound message {message_id!r} does not exist", metadata={"message": message_id})
        return row

    def list(self, filters: dict[str, Any], after: tuple[datetime, str] | None, limit: int) -> list[InboundRow]:
        q = select(InboundRow).order_by(InboundRow.seq.desc()).limit(limit)
        for column, value in filters.items():
            q = q.where(getattr(InboundRow, column) == value)
        if after:
            q = q.where(InboundRow.seq < int(after[1]))
        return list(self.session.scalars(q))
