"""Named store operations on the outbox and the message references. Each takes
the caller's session and never commits.

`write` is the hot path of sending: the inserts of SendEmail calls that arrive
together and the results of attempts that end together go into one transaction
(server/outbox.py's GroupCommit), each kind as one executemany of a statement
compiled once (fast.py).
"""
from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Sequence

from sqlalchemy import ColumnElement, bindparam, case, func, insert, or_, select, tuple_, update
from sqlalchemy.orm import Session

from ..errors import NotFound
from ..store.fast import Prepared
from ..store.models import MessageRefRow, OutboundRow
from ..providers.store import provider_fingerprints

_OUT = OutboundRow.__table__
_REFS = MessageRefRow.__table__


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

    @staticmethod
    def of_values(v: dict[str, Any]) -> "Outbound":
        """From the values just inserted (the row needs no reading back)."""
        return Outbound(
            id=v["id"], provider_id=v["provider_id"], request_id=v["request_id"],
            message_id=v["message_id"], conversation_id=v["conversation_id"],
            state=OutState(v["state"]), to=tuple(v["to"]), cc=tuple(v["cc"]), bcc=tuple(v["bcc"]),
            subject=v["subject"], attachments=tuple(v["attachments"]), size_bytes=v["size_bytes"],
            attempts=v["attempts"], next_attempt_time=v["next_attempt_time"], last_code=v["last_code"],
            last_error=v["last_error"], last_transient=v["last_transient"],
            create_time=v["create_time"], sent_time=v["sent_time"])


@dataclass(frozen=True)
class Claimed:
    """A message leased for one delivery attempt: `lease` is the token the attempt's
    result is recorded under (Finish), `lease_until` when the lease runs out unless
    renewed (OutboxStore.renew)."""

    message: Outbound
    mail_from: str
    raw: bytes
    lease: str
    lease_until: datetime
    provider: Any = None  # the StoredProvider, when the caller has just read it
    # A first attempt made while the message is still being inserted: awaited before
    # the message is handed over or its row is touched; raises if it was not stored.
    stored: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True)
class NewOutbound:
    """A message for `write` to insert, leased to the caller for its first attempt.

    values: every column of outbound_messages. references: the message's References
    chain (message_refs). provider: (provider id, fingerprint) of the provider as it
    was when the message was composed; if the provider has changed since, nothing is
    inserted and `write` answers STALE (compose again). None: not checked."""

    values: dict[str, Any]
    references: list[str]
    provider: tuple[str, Any] | None = None


@dataclass(frozen=True)
class Finish:
    """The result of an attempt for `write` to record, if the message is still under
    the attempt's lease (the token of its Claimed): the state, the lease given back,
    attempts counted (unless not `counted`), the next attempt's time (None: not due
    again), the server's code and words, and sent_time for SENT."""

    message: Outbound
    lease: str
    now: datetime
    state: OutState
    counted: bool = True
    next_attempt: datetime | None = None
    code: int = 0
    error: str = ""
    transient: bool = False


@dataclass(frozen=True)
class Duplicate:
    """`write`'s answer to a NewOutbound whose request_id the provider already has."""

    first: Outbound


@dataclass(frozen=True)
class LeaseLost:
    """`write`'s answer to a Finish whose lease was taken over (the attempt outlived
    it, and another claimed the message): nothing recorded; the message as stored."""

    current: Outbound


class _Stale:
    def __repr__(self) -> str:
        return "STALE"


STALE = _Stale()


class OutboxStore:
    def __init__(self, session: Session):
        self.session = session

    # -- submit
    def find_request(self, provider_id: str, request_id: str) -> Outbound | None:
        row = self.session.scalar(select(OutboundRow).where(
            OutboundRow.provider_id == provider_id, OutboundRow.request_id == request_id))
        return Outbound.of(row) if row else None

    def write(self, ops: Sequence[NewOutbound | Finish]) -> list[Any]:
        """Inserts and records results, several in one go; per op, in order: the Claimed
        message inserted, a Duplicate (same provider and request_id: nothing inserted),
        STALE (the provider changed: nothing inserted), the Outbound recorded, or
        LeaseLost (a result whose lease was taken over: nothing recorded).
        Raises if any statement fails; the caller's transaction then inserts nothing."""
        results: list[Any] = [None] * len(ops)
        self._finish_many([(i, op) for i, op in enumerate(ops) if isinstance(op, Finish)], results)
        new = [(i, op) for i, op in enumerate(ops) if isinstance(op, NewOutbound)]
        if not new:
            return results
        checked = {op.provider[0] for _, op in new if op.provider}
        current = provider_fingerprints(self.session, checked) if checked else {}
        keys = {(op.values["provider_id"], op.values["request_id"]) for _, op in new if op.values["request_id"]}
        known: dict[tuple[str, str], Outbound] = {}
        if keys:  # retries of calls already stored
            q = select(OutboundRow).where(tuple_(OutboundRow.provider_id, OutboundRow.request_id).in_(keys))
            known = {(r.provider_id, r.request_id): Outbound.of(r) for r in self.session.scalars(q)}
        rows, refs = [], []
        for i, op in new:
            v = op.values
            key = (v["provider_id"], v["request_id"])
            if op.provider and current.get(op.provider[0]) != op.provider[1]:
                results[i] = STALE
            elif v["request_id"] and key in known:
                results[i] = Duplicate(known[key])
            else:
                rows.append(v)
                refs.append({"message_id": v["message_id"], "conversation_id": v["conversation_id"],
                             "references": op.references, "create_time": v["create_time"]})
                message = Outbound.of_values(v)
                if v["request_id"]:
                    known[key] = message  # the same request twice in one batch: stored once
                results[i] = Claimed(message, v["mail_from"], v["raw"], v["lease_token"], v["lease_until"])
        _INSERT.executemany(self.session, rows)
        _INSERT_REF.executemany(self.session, refs)
        return results

    def _finish_many(self, ops: list[tuple[int, Finish]], results: list[Any]) -> None:
        if not ops:
            return
        params = []
        for i, f in ops:
            m = f.message
            params.append({"b_id": m.id, "b_token": f.lease, "b_state": f.state.value,
                           "b_counted": 1 if f.counted else 0, "b_next": f.next_attempt, "b_lease": None,
                           "b_code": f.code, "b_error": f.error, "b_transient": f.transient, "b_now": f.now,
                           "b_sent": f.now if f.state is OutState.SENT else None})
            results[i] = replace(
                m, state=f.state, attempts=m.attempts + (1 if f.counted else 0), next_attempt_time=f.next_attempt,
                last_code=f.code, last_error=f.error, last_transient=f.transient,
                sent_time=f.now if f.state is OutState.SENT else m.sent_time)
        if _FINISH.executemany(self.session, params) == len(params):
            return
        # Some leases were taken over (rare): which, and what is stored for them. A
        # token is never cleared, so a row recorded here still carries its own.
        ids = [f.message.id for _, f in ops]
        rows = {r.id: r for r in self.session.scalars(select(OutboundRow).where(OutboundRow.id.in_(ids)))}
        for i, f in ops:
            row = rows.get(f.message.id)
            if row is None or row.lease_token != f.lease:
                results[i] = LeaseLost(Outbound.of(row) if row else f.message)

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

    def list(self, filters: dict[str, Any], after: tuple[datetime, str] | None, limit: int,
             where: Sequence[ColumnElement[bool]] = ()) -> list[Outbound]:
        q = select(OutboundRow).where(*where).order_by(OutboundRow.create_time.desc(), OutboundRow.id.desc()).limit(limit)
        for column, value in filters.items():
            q = q.where(getattr(OutboundRow, column) == value)
        if after:
            t, i = after
            q = q.where((OutboundRow.create_time < t) | ((OutboundRow.create_time == t) & (OutboundRow.id < i)))
        return [Outbound.of(r) for r in self.session.scalars(q)]

    # -- delivery
    def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[Claimed]:
        """Leases up to `limit` due messages, each under a token of its own. On
        PostgreSQL, SKIP LOCKED lets several replicas claim side by side without
        waiting on each other."""
        q = (select(OutboundRow)
             .where(OutboundRow.state.in_(WAITING), OutboundRow.next_attempt_time <= now,
                    or_(OutboundRow.lease_until.is_(None), OutboundRow.lease_until < now))
             .order_by(OutboundRow.next_attempt_time).limit(limit)
             .with_for_update(skip_locked=True))
        rows = list(self.session.scalars(q))
        for row in rows:
            row.lease_until, row.lease_token = now + lease, str(uuid.uuid4())
        self.session.flush()
        return [Claimed(Outbound.of(r), r.mail_from, r.raw, r.lease_token, r.lease_until) for r in rows]

    def renew(self, leases: Sequence[tuple[str, str]], until: datetime) -> set[str]:
        """Extends leases, (message id, token), still held to `until`; returns the ids
        of those that were (the others were given back or taken over)."""
        held = set()
        for message_id, token in leases:
            if self.session.execute(update(OutboundRow).where(
                    OutboundRow.id == message_id, OutboundRow.lease_token == token,
                    OutboundRow.lease_until.is_not(None)).values(lease_until=until)).rowcount:
                held.add(message_id)
        return held

    def postpone(self, message_id: str, lease: str, until: datetime) -> None:
        """Gives a leased message back without an attempt (provider not GREEN, over its limits)."""
        self.session.execute(update(OutboundRow).where(OutboundRow.id == message_id, OutboundRow.lease_token == lease)
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


# The statements of `write`, run with executemany on the DBAPI cursor (see fast.py).
_INSERT = Prepared(insert(_OUT))
_INSERT_REF = Prepared(insert(_REFS))
# sent_time is set for SENT only: coalesce keeps the earlier value otherwise.
_FINISH = Prepared(update(_OUT).where(_OUT.c.id == bindparam("b_id"), _OUT.c.lease_token == bindparam("b_token"))
                   .values(
    state=bindparam("b_state"), attempts=_OUT.c.attempts + bindparam("b_counted"),
    next_attempt_time=bindparam("b_next", type_=_OUT.c.next_attempt_time.type),
    lease_until=bindparam("b_lease", type_=_OUT.c.lease_until.type),
    last_code=bindparam("b_code"), last_error=bindparam("b_error"),
    last_transient=bindparam("b_transient", type_=_OUT.c.last_transient.type),
    update_time=bindparam("b_now", type_=_OUT.c.update_time.type),
    sent_time=func.coalesce(bindparam("b_sent", type_=_OUT.c.sent_time.type), _OUT.c.sent_time)))
