"""Named store operations on the campaign queues and mailbox positions. Each takes
the caller's session and never commits. Claims lock with SKIP LOCKED, so several
replicas on one PostgreSQL share a queue without handing a message out twice.

A burst comes in batches (a FETCH of many messages, a claim of a consumer's whole
free window, an ack of many): each operation costs a few statements per batch with
Core inserts and updates, not an ORM flush per message."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from sqlalchemy import ColumnElement, bindparam, insert, literal_column, select, tuple_, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from ..errors import FailedPrecondition, NotFound
from ..store.fast import Prepared
from ..store.models import InboundRawRow, InboundRow, MailboxPositionRow, MessageRefRow, ProviderRow
from .messages import Delivery, InboundMessage, InState, new_token

T = TypeVar("T")
INBOUND = InboundRow.__table__
RAW = InboundRawRow.__table__
REFS = MessageRefRow.__table__
PROVIDERS = ProviderRow.__table__
# Values per IN list: far below SQLite's (32766) and PostgreSQL's (65535) limits on
# bound parameters, for pairs too.
CHUNK = 500
# What an InboundMessage is read from (_message), and its bytes, from their own table.
_COLUMNS = tuple(INBOUND.c[name] for name in (
    "id", "seq", "provider_id", "campaign", "message_id", "conversation_id", "headers", "automatic", "oversized",
    "size_bytes", "state", "delivery_count", "attempts", "receive_time"))
_RAW = select(RAW.c.raw).where(RAW.c.id == INBOUND.c.id).scalar_subquery().label("raw")


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


# Every message fetched and claimed goes through these: compiled once (see
# fast.Prepared). seq is left out: the database numbers the rows in the order given.
_INSERT = Prepared(insert(INBOUND).values({c.name: bindparam(c.name, type_=c.type)
                                           for c in INBOUND.c if c.name != "seq"}))
_INSERT_RAW = Prepared(insert(RAW))
_INSERT_REF = Prepared(insert(REFS))
_LEASE = Prepared(update(INBOUND).where(INBOUND.c.seq == bindparam("b_seq")).values(
    state=bindparam("b_state"), lease_token=bindparam("b_token"), lease_consumer=bindparam("b_consumer"),
    lease_until=bindparam("b_until", type_=INBOUND.c.lease_until.type),
    delivery_count=INBOUND.c.delivery_count + literal_column("1"), attempts=bindparam("b_attempts")))


class InboundStore:
    def __init__(self, session: Session):
        self.session = session

    # -- the watcher side
    def position(self, provider_id: str, folder: str) -> tuple[int | None, int]:
        pos = self.session.get(MailboxPositionRow, (provider_id, folder))
        return (pos.uidvalidity, pos.last_uid) if pos else (None, 0)

    def provider_queue(self, provider_id: str) -> tuple[str, bool]:
        """The campaign a provider's mail is queued on, and whether replies join the
        conversations they answer (its active_reference)."""
        p = PROVIDERS
        found = self.session.execute(select(p.c.campaign, p.c.active_reference).where(p.c.id == provider_id)).first()
        if found is None:
            raise NotFound(f"provider {provider_id!r} does not exist", metadata={"provider": provider_id})
        return found.campaign, found.active_reference

    def enqueue(self, provider_id: str, campaign: str, folder: str, uidvalidity: int,
                arrivals: Iterable[Arrival], now: datetime, threaded: bool) -> list[str]:
        """Commits arrivals to the campaign queue (by the caller's transaction) and
        moves the mailbox position; returns the ids queued, in arrival order. A message
        is queued once: by its UID in this UIDVALIDITY, and across a resync by
        Message-ID together with a hash of its bytes (never by Message-ID alone:
        senders reuse them); within the batch too."""
        arrivals = list(arrivals)
        last_uid = max((a.uid for a in arrivals), default=0)
        t = INBOUND
        seen_uids: set[int] = set()
        for part in _chunks(sorted({a.uid for a in arrivals})):
            seen_uids.update(self.session.scalars(select(t.c.uid).where(
                t.c.provider_id == provider_id, t.c.folder == folder, t.c.uidvalidity == uidvalidity,
                t.c.uid.in_(part))))
        # (Message-ID, hash) pairs already queued: both IN lists on the dedup index, then
        # the exact pairs here (a superset comes back, never more than the batch's pairs).
        pairs = {(a.message_id, a.content_hash) for a in arrivals}
        seen_mail: set[tuple[str, str]] = set()
        for part in _chunks(sorted(pairs)):
            seen_mail.update((m, h) for m, h in self.session.execute(select(t.c.message_id, t.c.content_hash).where(
                t.c.provider_id == provider_id, t.c.message_id.in_({m for m, _ in part}),
                t.c.content_hash.in_({h for _, h in part}))) if (m, h) in pairs)
        # Message-ID -> conversation of every id this batch needs: its own (known ones get
        # no new reference) and, when threading, those it refers to.
        wanted = {a.message_id for a in arrivals if a.message_id}
        if threaded:
            wanted.update(r for a in arrivals for r in a.references)
        conversations: dict[str, str] = {}
        for part in _chunks(sorted(wanted)):
            conversations.update((m, c) for m, c in self.session.execute(
                select(REFS.c.message_id, REFS.c.conversation_id).where(REFS.c.message_id.in_(part))))
        rows: list[dict[str, Any]] = []
        raws: list[dict[str, Any]] = []
        refs: list[dict[str, Any]] = []
        for a in arrivals:
            if a.uid in seen_uids or (a.message_id, a.content_hash) in seen_mail:
                continue
            seen_uids.add(a.uid)
            seen_mail.add((a.message_id, a.content_hash))
            conversation = (_conversation(a.references, conversations) if threaded else None) or str(uuid.uuid4())
            rows.append(dict(
                id=str(uuid.uuid4()), provider_id=provider_id, campaign=campaign, folder=folder,
                uidvalidity=uidvalidity, uid=a.uid, message_id=a.message_id, content_hash=a.content_hash,
                conversation_id=conversation, headers=a.headers, automatic=a.automatic, oversized=a.oversized,
                size_bytes=len(a.raw), state=InState.QUEUED.value, delivery_count=0, attempts=0,
                lease_token=None, lease_consumer=None, lease_until=None, receive_time=now, ack_time=None))
            raws.append({"id": rows[-1]["id"], "raw": a.raw})
            if a.message_id and a.message_id not in conversations:
                conversations[a.message_id] = conversation  # later mail of the batch may refer to it
                refs.append(dict(message_id=a.message_id, conversation_id=conversation,
                                 references=list(a.references), create_time=now))
        # Inserted in the arrivals' order, which seq (the queue's order) keeps.
        _INSERT.executemany(self.session, rows)
        _INSERT_RAW.executemany(self.session, raws)
        _INSERT_REF.executemany(self.session, refs)
        pos = self.session.get(MailboxPositionRow, (provider_id, folder))
        if pos is None:
            self.session.add(MailboxPositionRow(provider_id=provider_id, folder=folder,
                                                uidvalidity=uidvalidity, last_uid=last_uid))
        elif pos.uidvalidity != uidvalidity:
            pos.uidvalidity, pos.last_uid = uidvalidity, last_uid
        else:
            pos.last_uid = max(pos.last_uid, last_uid)
        self.session.flush()
        return [r["id"] for r in rows]

    # -- the consumer side
    def claim(self, *, campaign: str | None, provider_ids: list[str], consumer: str, limit: int,
              deadline: timedelta, now: datetime, dead_letter_after: Callable[[str], int],
              holder: str = "", max_bytes: int = 0, read_bytes: int = 0, with_raw: bool = False) -> list[Delivery]:
        """Up to `limit` messages, oldest first: queued ones and those whose lease
        expired. Each gets a lease with a token of its own (its ack id), given to
        `holder` (see messages.new_token). An expired lease is a failed attempt: a
        message that reaches its campaign's `dead_letter_after` (0: never) goes to
        the dead letters instead. The messages taken hold at most `max_bytes` (the
        consumer's window), and their raw bytes read (for those whose body is parsed,
        not oversized, or all `with_raw`) at most `read_bytes` (0: no limit), but at
        least one message is taken; the rest stay queued for the next claim."""
        if limit <= 0:
            return []
        t = INBOUND
        where = (t.c.campaign == campaign) if campaign else t.c.provider_id.in_(provider_ids)
        # Two queries rather than one with OR: each walks the queue index (campaign,
        # state, seq) in order instead of every message the campaign ever had.
        rows: list[Row[Any]] = []
        for state in ((t.c.state == InState.QUEUED.value),
                      (t.c.state == InState.DELIVERED.value) & (t.c.lease_until < now)):
            rows += self.session.execute(select(*_COLUMNS).where(where, state).order_by(t.c.seq).limit(limit)
                                         .with_for_update(skip_locked=True)).all()
        rows = sorted(rows, key=lambda r: r.seq)[:limit]
        attempts = {r.seq: r.attempts + (r.state == InState.DELIVERED.value) for r in rows}
        dead = [r.seq for r in rows if _exhausted(attempts[r.seq], dead_letter_after(r.campaign))]
        for seq in dead:  # rare: one statement each
            self.session.execute(update(t).where(t.c.seq == seq).values(
                state=InState.DEAD_LETTER.value, attempts=attempts[seq], lease_token=None, lease_until=None))
        dead_set = set(dead)
        taken, size, read = [], 0, 0
        for r in rows:
            if r.seq in dead_set:
                continue
            need = r.size_bytes if with_raw or not r.oversized else 0
            if taken and ((max_bytes > 0 and size + r.size_bytes > max_bytes)
                          or (read_bytes > 0 and read + need > read_bytes)):
                break
            taken.append(r)
            size, read = size + r.size_bytes, read + need
        raws: dict[str, bytes] = {}
        for part in _chunks([r.id for r in taken if with_raw or not r.oversized]):
            raws.update((i, raw) for i, raw in self.session.execute(select(RAW.c.id, RAW.c.raw).where(RAW.c.id.in_(part))))
        until = now + deadline
        out = [Delivery(_message(r, raws.get(r.id), state=InState.DELIVERED, delivery_count=r.delivery_count + 1),
                        new_token(holder), until) for r in taken]
        _LEASE.executemany(self.session, [{"b_seq": d.message.seq, "b_token": d.token, "b_consumer": consumer,
                                           "b_until": until, "b_state": InState.DELIVERED.value,
                                           "b_attempts": attempts[d.message.seq]} for d in out])
        return out

    def ack(self, pairs: list[tuple[str, str]], now: datetime) -> int:
        """Acknowledges (message id, lease token) pairs in a statement per CHUNK;
        returns how many were held under those tokens."""
        done = 0
        t = INBOUND
        for part in _chunks(sorted(set(pairs))):
            done += self.session.execute(update(t).where(*_held(part)).values(
                state=InState.ACKNOWLEDGED.value, ack_time=now, lease_until=None)).rowcount
        return done

    def leases(self, pairs: list[tuple[str, str]]) -> dict[str, datetime]:
        """Message id -> lease deadline of those of these (message id, lease token)
        pairs still delivered under that token."""
        t = INBOUND
        found: dict[str, datetime] = {}
        for part in _chunks(sorted(set(pairs))):
            found.update((mid, until) for mid, until in self.session.execute(
                select(t.c.id, t.c.lease_until).where(*_held(part))))
        return found

    def extend(self, pairs: list[tuple[str, str, int]], now: datetime, dead_letter_after: Callable[[str], int]
               ) -> None:
        """New deadlines; 0 seconds gives the message back to the queue at once: a
        failed attempt, and a dead letter at the campaign's `dead_letter_after`."""
        t = INBOUND
        for mid, token, seconds in pairs:
            held = (t.c.id == mid, t.c.lease_token == token, t.c.state == InState.DELIVERED.value)
            if seconds > 0:
                self.session.execute(update(t).where(*held).values(lease_until=now + timedelta(seconds=seconds)))
                continue
            row = self.session.execute(select(t.c.campaign, t.c.attempts).where(*held)).first()
            if row is None:
                continue
            dead = _exhausted(row.attempts + 1, dead_letter_after(row.campaign))
            self.session.execute(update(t).where(*held).values(
                state=InState.DEAD_LETTER.value if dead else InState.QUEUED.value, attempts=row.attempts + 1,
                lease_token=None, lease_until=None))

    def release(self, pairs: list[tuple[str, str]]) -> None:
        """A consumer went away: its unacknowledged messages go back to the queue,
        untried (not an attempt: a consumer that takes mail and leaves, again and
        again, must not be able to send a campaign's queue to the dead letters)."""
        t = INBOUND
        for part in _chunks(sorted(set(pairs))):
            self.session.execute(update(t).where(*_held(part)).values(
                state=InState.QUEUED.value, lease_token=None, lease_until=None))

    def queues_of(self, message_ids: list[str]) -> set[tuple[str, str]]:
        """(campaign, provider id) of those of these messages that are queued: whom to wake."""
        t = INBOUND
        found: set[tuple[str, str]] = set()
        for part in _chunks(sorted(set(message_ids))):
            found.update((c, p) for c, p in self.session.execute(select(t.c.campaign, t.c.provider_id).distinct()
                                                                 .where(t.c.id.in_(part),
                                                                        t.c.state == InState.QUEUED.value)))
        return found

    def requeue(self, message_id: str) -> InboundMessage:
        found = self._read(message_id, raw=False)
        if found.state is not InState.DEAD_LETTER:
            raise FailedPrecondition(f"inbound message {message_id!r} is {found.state.value}, not dead-lettered",
                                     reason="NOT_DEAD_LETTER")
        t = INBOUND
        self.session.execute(update(t).where(t.c.id == message_id).values(
            state=InState.QUEUED.value, delivery_count=0, attempts=0, lease_token=None, lease_until=None))
        return self._read(message_id, raw=False)

    # -- reads
    def head(self, message_id: str) -> InboundMessage:
        """The message without its raw bytes."""
        return self._read(message_id, raw=False)

    def get(self, message_id: str) -> InboundMessage:
        """The message with its raw bytes."""
        return self._read(message_id, raw=True)

    def list(self, filters: dict[str, Any], after: tuple[datetime, str] | None, limit: int,
             where: Sequence[ColumnElement[bool]] = ()) -> list[InboundMessage]:
        t = INBOUND
        q = select(*_COLUMNS).where(*where).order_by(t.c.seq.desc()).limit(limit)
        for column, value in filters.items():
            q = q.where(t.c[column] == value)
        if after:
            q = q.where(t.c.seq < int(after[1]))
        return [_message(r) for r in self.session.execute(q)]

    def _read(self, message_id: str, *, raw: bool) -> InboundMessage:
        q = select(*_COLUMNS, _RAW) if raw else select(*_COLUMNS)
        r = self.session.execute(q.where(INBOUND.c.id == message_id)).first()
        if r is None:
            raise NotFound(f"inbound message {message_id!r} does not exist", metadata={"message": message_id})
        return _message(r, r.raw if raw else None)


def _exhausted(attempts: int, dead_letter_after: int) -> bool:
    return 0 < dead_letter_after <= attempts


def _message(r: Row[Any], raw: bytes | None = None, *, state: InState | None = None,
             delivery_count: int | None = None) -> InboundMessage:
    """The domain's message from a row of _COLUMNS; `state` and `delivery_count` as
    just written, when they were."""
    h = r.headers or {}
    return InboundMessage(
        id=r.id, seq=r.seq, provider_id=r.provider_id, campaign=r.campaign, message_id=r.message_id,
        conversation_id=r.conversation_id, subject=h.get("subject") or "", from_=tuple(h.get("from", ())),
        to=tuple(h.get("to", ())), cc=tuple(h.get("cc", ())), reply_to=tuple(h.get("reply_to", ())),
        date=datetime.fromisoformat(h["date"]) if h.get("date") else None, automatic=r.automatic,
        oversized=r.oversized, size_bytes=r.size_bytes, state=state or InState(r.state),
        delivery_count=r.delivery_count if delivery_count is None else delivery_count,
        receive_time=r.receive_time, raw=raw)


def _conversation(references: tuple[str, ...], known: dict[str, str]) -> str | None:
    """The conversation of the newest known message this one refers to."""
    for ref in reversed(references):
        if ref in known:
            return known[ref]
    return None


def _held(pairs: Sequence[tuple[str, str]]) -> tuple[Any, ...]:
    """WHERE for messages delivered under these (id, lease token) pairs. The plain id
    list is what lets SQLite use the id index (it scans for a row-value IN alone)."""
    t = INBOUND
    return (t.c.id.in_([mid for mid, _ in pairs]), tuple_(t.c.id, t.c.lease_token).in_(pairs),
            t.c.state == InState.DELIVERED.value)


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
