"""A provider's history: what happened to it, for the operators who ask *when* and
*how often* (ListProviderEvents). The one place events are recorded:

* state changes are written by ProviderStore in the transaction that changes the
  state (HistoryStore.add), so a state and its event never disagree;
* everything else comes through History.record: failed checks and sign-ins from
  lifecycle.py, token renewals from the drivers (ProviderRecords), reconnects from
  the inbound sinks (inbound/sources.py).

The table stays bounded three ways:

* events older than the retention (MAILGATE_EVENT_RETENTION_DAYS) are pruned at
  start and every PRUNE_EVERY seconds, one indexed DELETE;
* at most CAP events of each type are kept per provider: each insert drops the
  oldest beyond it, so a flapping mailbox's state changes cannot push its sign-ins
  out, nor grow the table;
* routine events (COALESCED: reconnects, renewals, failed renewals) are written at
  most once per WINDOW per provider, type and error code: the first at once, those
  after it counted in memory and written as one event with their `count` when the
  window has passed (by the flush every WINDOW, or at shutdown).

Reasons are mailgate's own words (reasons.py) and the servers' (their replies, an
OAuth error's description), which carry no secret; they are still passed through
the logs' redaction filter and cut at REASON_CHARS before they are stored.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mailgate.drivers.api import CheckResult, Report

from .. import paging
from ..logs import redact
from ..store.db import Database
from ..store.models import ProviderEventRow, ProviderRow
from . import reasons
from .state import Cause, State

log = logging.getLogger("mailgate.providers")

CAP = 1000  # events of each type kept per provider
WINDOW = 60.0  # seconds: at most one event of a coalesced kind per provider in this time
PRUNE_EVERY = 3600.0  # seconds between prunes by age
REASON_CHARS = 2000


class EventType(enum.Enum):
    STATE_CHANGED = "STATE_CHANGED"
    CHECK_FAILED = "CHECK_FAILED"
    RECONNECT = "RECONNECT"
    TOKEN_RENEWED = "TOKEN_RENEWED"
    TOKEN_RENEWAL_FAILED = "TOKEN_RENEWAL_FAILED"
    AUTHORIZATION_STARTED = "AUTHORIZATION_STARTED"
    AUTHORIZATION_COMPLETED = "AUTHORIZATION_COMPLETED"
    AUTHORIZATION_FAILED = "AUTHORIZATION_FAILED"


COALESCED = frozenset({EventType.RECONNECT, EventType.TOKEN_RENEWED, EventType.TOKEN_RENEWAL_FAILED})


@dataclass(frozen=True)
class Event:
    provider_id: str
    type: EventType
    reason: str = ""
    previous_state: State | None = None  # STATE_CHANGED; None: the provider was just created
    state: State | None = None
    cause: Cause | None = None
    check_id: str = ""
    error_code: str = ""  # a drivers.api.ErrorCode's value
    count: int = 1
    time: datetime | None = None  # None: when recorded
    seq: int = 0  # given by the store


def state_changed(provider_id: str, previous: State | None, state: State, cause: Cause, reason: str,
                  at: datetime) -> Event:
    return Event(provider_id, EventType.STATE_CHANGED, reason, previous, state, cause, time=at)


def problem_event(provider_id: str, type_: EventType, c: CheckResult, reason: str) -> Event:
    """An event about a failed step `c` (a reconnect's cause, a failed check)."""
    return Event(provider_id, type_, reason, check_id=c.id, error_code=c.error_code.value)


def checks_failed(provider_id: str, report: Report, during: str) -> list[Event]:
    """An event per failed check of `report`, the checks of `during` ("activation")."""
    return [problem_event(provider_id, EventType.CHECK_FAILED, c, f"{during}: {reasons.describe(c)}")
            for c in report.failures]


class HistoryStore:
    """Named store operations on the events; they take the caller's session and never commit."""

    def __init__(self, session: Session, cap: int = CAP):
        self.session, self.cap = session, cap

    def add(self, events: Sequence[Event]) -> None:
        """Stores the events of providers that exist (one deleted meanwhile has no
        history any more) and drops, per provider and type, what passes the cap."""
        if not events:
            return
        ids = {e.provider_id for e in events}
        existing = set(self.session.scalars(select(ProviderRow.id).where(ProviderRow.id.in_(ids))))
        rows = [_row(e) for e in events if e.provider_id in existing]
        self.session.add_all(rows)
        self.session.flush()
        for provider_id, type_ in {(r.provider_id, r.type) for r in rows}:
            self._trim(provider_id, type_)

    def _trim(self, provider_id: str, type_: str) -> None:
        E = ProviderEventRow
        mine = (E.provider_id == provider_id, E.type == type_)
        oldest_kept = select(E.seq).where(*mine).order_by(E.seq.desc()).offset(self.cap - 1).limit(1)
        self.session.execute(delete(E).where(*mine, E.seq < oldest_kept.scalar_subquery())
                             .execution_options(synchronize_session=False))

    def page(self, provider_id: str, type_: str | None, before: int | None, limit: int) -> list[Event]:
        """Newest first: the events with a seq below `before` (None: from the newest)."""
        E = ProviderEventRow
        q = select(E).where(E.provider_id == provider_id).order_by(E.seq.desc()).limit(limit)
        if type_:
            q = q.where(E.type == type_)
        if before is not None:
            q = q.where(E.seq < before)
        return [_event(r) for r in self.session.scalars(q)]

    def prune(self, before: datetime) -> int:
        """Drops every event older than `before`; returns how many."""
        done = self.session.execute(delete(ProviderEventRow).where(ProviderEventRow.time < before)
                                    .execution_options(synchronize_session=False))
        return done.rowcount or 0


def _row(e: Event) -> ProviderEventRow:
    assert e.time is not None
    return ProviderEventRow(
        provider_id=e.provider_id, type=e.type.value, time=e.time, reason=clean(e.reason),
        previous_state=e.previous_state.value if e.previous_state else "",
        state=e.state.value if e.state else "", cause=e.cause.value if e.cause else "",
        check_id=e.check_id[:64], error_code=e.error_code, count=e.count)


def _event(r: ProviderEventRow) -> Event:
    return Event(r.provider_id, EventType(r.type), r.reason,
                 State(r.previous_state) if r.previous_state else None,
                 State(r.state) if r.state else None, Cause(r.cause) if r.cause else None,
                 r.check_id, r.error_code, r.count, r.time, r.seq)


def clean(reason: str) -> str:
    """A reason as stored: redacted, cut."""
    return redact(reason, REASON_CHARS)


@dataclass
class _Held:
    """A coalesced kind's window: when its last event was written, what came since."""

    written: float
    count: int = 0
    latest: Event | None = None


@dataclass
class History:
    """Records events (coalescing the routine ones), lists them, prunes them.
    `clock`: seconds since the epoch (tests move it: mailgate.testing.clock)."""

    db: Database
    pages: paging.PageTokens
    retention: timedelta
    cap: int = CAP
    window: float = WINDOW
    clock: Callable[[], float] = time.time
    _held: dict[tuple[str, EventType, str], _Held] = field(default_factory=dict)
    _tasks: set[asyncio.Future[Any]] = field(default_factory=set)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: asyncio.Task[None] | None = None

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)

    async def record(self, *events: Event) -> None:
        """Stores the events (the coalesced kinds through their window). Never raises:
        a history that cannot be written must not fail what it records."""
        now, due = self.clock(), []
        for e in events:
            if e.time is None:
                e = replace(e, time=datetime.fromtimestamp(now, timezone.utc))
            if e.type in COALESCED:
                key = (e.provider_id, e.type, e.error_code)
                held = self._held.get(key)
                if held is not None and now - held.written < self.window:
                    held.count += e.count
                    held.latest = e
                    continue
                if held is not None:  # its window has passed: this event stands for what it held too
                    e = replace(e, count=e.count + held.count)
                self._held[key] = _Held(written=now)
            due.append(e)
        await self._write(due)

    def record_soon(self, event: Event) -> None:
        """record() from any thread, without waiting."""
        loop = self._loop or asyncio.get_running_loop()
        try:
            loop.call_soon_threadsafe(self._spawn, event)
        except RuntimeError:  # the loop is closed: the server is stopping
            pass

    def _spawn(self, event: Event) -> None:
        task = asyncio.ensure_future(self.record(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self, everything: bool = False) -> None:
        """Writes what the windows held back: those whose window has passed, or
        (`everything`, at shutdown) all."""
        now, due = self.clock(), []
        for key, held in list(self._held.items()):
            if now - held.written < self.window and not everything:
                continue
            if held.latest is None:
                del self._held[key]  # a quiet window: forget it
                continue
            due.append(replace(held.latest, count=held.count))
            self._held[key] = _Held(written=now)
        await self._write(due)

    async def _write(self, events: list[Event]) -> None:
        if not events:
            return
        try:
            await self.db.run(lambda s: HistoryStore(s, self.cap).add(events))
        except Exception:  # the store is down, or the provider went meanwhile
            log.warning("provider events not recorded: %s", ", ".join(sorted({e.type.value for e in events})),
                        exc_info=True)

    async def prune(self) -> int:
        cutoff = self.now() - self.retention
        dropped = await self.db.run(lambda s: HistoryStore(s).prune(cutoff))
        if dropped:
            log.info("provider events: %d older than %s dropped", dropped, f"{cutoff:%Y-%m-%d %H:%M}")
        return dropped

    async def list(self, provider_id: str, filter_text: str, page_token: str, size: int
                   ) -> paging.Page[Event]:
        filters = paging.parse_filter(filter_text, {"type": paging.enum_name(EventType, "TYPE_", "type")})
        return await self.pages.page(
            lambda after, limit: self.db.run(lambda s: HistoryStore(s).page(
                provider_id, filters.get("type"), int(after[1]) if after else None, limit)),
            lambda e: (e.time, str(e.seq)), f"providers/{provider_id}/events", filter_text, page_token, size)

    # -- the server's lifetime
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._prune_quietly()
        self._runner = asyncio.create_task(self._run())

    async def _run(self) -> None:
        pruned = time.monotonic()
        while True:
            await asyncio.sleep(self.window)
            await self.flush()
            if time.monotonic() - pruned >= PRUNE_EVERY:
                await self._prune_quietly()
                pruned = time.monotonic()

    async def _prune_quietly(self) -> None:
        try:
            await self.prune()
        except Exception:
            log.warning("provider events: pruning failed; tried again in %.0f s", PRUNE_EVERY, exc_info=True)

    async def stop(self) -> None:
        """Writes what is held and what is on its way."""
        if self._runner:
            self._runner.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush(everything=True)
