"""Named store operations on the outbox and the message references. Each takes
the caller's session and never commits."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm import Session

from ..errors import NotFound
from .models import MessageRefRow, OutboundRow


class OutState(enum.Enum):
    QUEUED = "QUEUED"
    SENT = "SENT"
    RETRYING = "RETRYING"
    FAILED = "FAILED"


WAITING = (OutState.QUEUED.value, OutState.RETRYING.value)


@dataclass(frozen=True)
class Outbound:
    id: str
    provider_id: str
    request_id: str | None
    message_id: str
    conversation_id: str
    state: OutState
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str
    attachments: tuple[dict[str, Any], ...]
    size_bytes: int
    attempts: int
    next_attempt_time: datetime | None
    last_code: int
    last_error: str
    last_transient: bool
    create_time: datetime
    sent_time: datetime | None

    @staticmethod
    def of(row: OutboundRow) -> "Outbound":
        return Outbound(
            id=row.id, provider_id=row.provider_id, request_id=row.request_id,
            message_id=row.message_id, conversation_id=row.conversation_id,
            state=OutState(row.state), to=tuple(row.to), cc=tuple(row.cc), bcc=tuple(row.bcc),
            subject=row.subject, attachments=tuple(row.attachments), size_bytes=row.size_bytes,
            attempts=row.attempts, next_attempt_time=row.next_attempt_time, last_code=row.last_code,
            last_error=row.last_error, last_transient=row.last_transient,
            create_time=row.create_time, sent_time=row.sent_time)


@dataclass(frozen=True)
class Claimed:
    """A message leased for one delivery attempt."""

    message: Outbound
    mail_from: str
    raw: bytes
    provider: Any = None  # the StoredProvider, when the caller has just read it


class OutboxStore:
    def __init__(self, session: Session):
        self.session = session

    # -- submit
    def find_request(self, provider_id: str, request_id: str) -> Outbound | None:
        row = self.session.scalar(select(OutboundRow).where(
            OutboundRow.provider_id == provider_id, OutboundRow.request_id == request_id))
        return Outbound.of(row) if row else None

    def insert(self, row: OutboundRow, references: list[str]) -> Outbound:
        self.session.add(row)
        self.session.add(MessageRefRow(message_id=row.message_id, conversation_id=row.conversation_id,
                                       references=references, create_time=row.create_time))
        self.session.flush()
        return Outbound.of(row)

    def thread(self, message_id: str) -> tuple[str, tuple[str, ...]] | None:
        """The conversation of a known Message-ID and its References chain."""
        ref = self.session.get(MessageRefRow, message_id)
        return (ref.conversation_id, tuple(ref.references)) if ref else None

    # -- read
    def get(self, message_id: str) -> Outbound:
        row = self.session.get(OutboundRow, message_id)
        if row is None:
            raise NotFound(f"outbound message {message_id!r} does not exist", metadata={"message": message_id})
        return Outbound.of(row)

    def list(self, filters: dict[str, Any], after: tuple[datetime, str] | None, limit: int) -> list[Outbound]:
        q = select(OutboundRow).order_by(OutboundRow.create_time.desc(), OutboundRow.id.desc()).limit(limit)
        for column, value in filters.items():
            q = q.where(getattr(OutboundRow, column) == value)
        if after:
            t, i = after
            q = q.where((OutboundRow.create_time < t) | ((OutboundRow.create_time == t) & (OutboundRow.id < i)))
        return [Outbound.of(r) for r in self.session.scalars(q)]

    # -- delivery
    def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[Claimed]:
        """Leases up to `limit` due messages. On PostgreSQL, SKIP LOCKED lets several
        replicas claim side by side without waiting on each other."""
        q = (select(OutboundRow)
             .where(OutboundRow.state.in_(WAITING), OutboundRow.next_attempt_time <= now,
                    or_(OutboundRow.lease_until.is_(None), OutboundRow.lease_until < now))
             .order_by(OutboundRow.next_attempt_time).limit(limit)
             .with_for_update(skip_locked=True))
        rows = list(self.session.scalars(q))
        for row in rows:
            row.lease_until = now + lease
        self.session.flush()
        return [Claimed(Outbound.of(r), r.mail_from, r.raw) for r in rows]

    def finish(self, message_id: str, now: datetime, *, state: OutState, counted: bool = True,
               next_attempt: datetime | None = None, code: int = 0, error: str = "",
               transient: bool = False) -> Outbound:
        row = self.session.get(OutboundRow, message_id)
        assert row is not None
        row.state = state.value
        row.lease_until = None
        row.attempts += 1 if counted else 0
        row.next_attempt_time = next_attempt
        row.last_code, row.last_error, row.last_transient = code, error, transient
        row.update_time = now
        if state is OutState.SENT:
            row.sent_time = now
        self.session.flush()
        return Outbound.of(row)

    def postpone(self, message_ids: list[str], until: datetime) -> None:
        """Gives leased messages back without an attempt (provider not GREEN, over its limits)."""
        if message_ids:
            self.session.execute(update(OutboundRow).where(OutboundRow.id.in_(message_ids))
                                 .values(lease_until=None, next_attempt_time=until))

    def due_now(self, provider_id: str, now: datetime) -> int:
        """Makes a provider's waiting mail due at once (it turned GREEN)."""
        result = self.session.execute(update(OutboundRow).where(
            OutboundRow.provider_id == provider_id, OutboundRow.state.in_(WAITING),
            or_(OutboundRow.lease_until.is_(None), OutboundRow.lease_until < now),
            OutboundRow.next_attempt_time > now).values(next_attempt_time=now))
        return result.rowcount

    def sent_since(self, provider_id: str, since: datetime) -> int:
        return self.session.scalar(select(func.count()).select_from(OutboundRow).where(
            OutboundRow.provider_id == provider_id, OutboundRow.sent_time >= since)) or 0

    def next_due(self, now: datetime) -> datetime | None:
        """When the next message becomes claimable: its due time, or for one leased
        (an attempt under way, or a replica that died) the lease's end."""
        when = case((OutboundRow.lease_until > now, OutboundRow.lease_until),
                    else_=OutboundRow.next_attempt_time)
        return self.session.scalar(select(func.min(when)).where(OutboundRow.state.in_(WAITING)))
