"""Sending: SendEmail commits to the durable outbox, a worker delivers.

At-least-once towards the SMTP server: a message is committed before its first
attempt and marked SENT only after the server's 250; a crash in between sends it
again. Transient failures retry with exponential backoff and jitter, across
restarts; permanent ones end FAILED. A provider that is not GREEN keeps its mail
queued until it is; sending limits hold mail back instead of failing it.

An attempt holds its message under a lease (a token and an end time on the row):
renewed while the attempt runs, however long the SMTP exchange takes, so that no
worker takes the message for a second attempt meanwhile; and the attempt's result
is recorded only if the row still carries its token, so the result of an attempt
whose lease was taken over (this process stalled, another replica claimed the
message) never overwrites a newer one.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

from mailgate.drivers.api import DriverContext, Envelope, SendFailure
from mailgate.drivers.registry import DriverRegistry

from . import compose
from .. import limits, paging
from ..admission import ByteBudget
from ..access import scope
from ..access.tokens import UNRESTRICTED, Principal
from ..clock import utcnow
from ..errors import InvalidArgument, NotFound, Violation, Violations
from ..providers import reasons
from ..providers.events import ProviderChange
from ..providers.records import ProviderRecords
from ..providers.state import State, StoredProvider
from ..store.db import Database
from ..store.models import OutboundRow
from .store import STALE, Claimed, Duplicate, Finish, LeaseLost, NewOutbound, Outbound, OutboxStore, OutState

log = logging.getLogger("mailgate.outbox")


@dataclass
class OutboxSettings:
    max_message_bytes: int = 25 * 1024 * 1024
    first_attempt_wait: float = 10.0   # SendEmail waits this long for the first attempt
    retry_base: float = 30.0           # first retry after ~this many seconds, doubling
    retry_cap: float = 3600.0
    give_up_after: float = 2 * 86400.0  # transient failures for this long end FAILED
    not_ready_delay: float = 30.0      # a provider not GREEN is looked at again after this
    concurrency: int = 16              # attempts in flight
    lease: float = 120.0               # a claimed message is someone's for this long, renewed while its attempt runs
    # Messages estimated smaller than this are composed on the event loop (a fraction
    # of a millisecond; a hop to a worker thread costs as much); larger ones in the pool.
    inline_compose_bytes: int = 128 * 1024
    max_batch: int = 64                # writes sharing one transaction (group commit)
    commit_delay: float = 0.001        # a commit waits this long for writes on their way (GroupCommit)
    max_recipients: int = limits.DEFAULT_MAX_RECIPIENTS  # to + cc + bcc of one message
    # The bytes SendEmail calls under way may hold together (their request, the message
    # composed); a call that finds them taken waits up to budget_wait, then is refused
    # with RESOURCE_EXHAUSTED and RetryInfo. 0: no budget.
    budget_bytes: int = limits.DEFAULT_SEND_BUDGET_BYTES
    budget_wait: float = 1.0


# A batch inserting more message bytes than this is written off the event loop.
HEAVY_BYTES = 256 * 1024
# Recipients longer than this together (about 100 addresses) are checked off the event
# loop: parsing an entry costs up to a few milliseconds.
INLINE_CHECK_CHARS = 4096


class GroupCommit:
    """The outbox's writes (new messages, attempt results) share transactions.

    A write that arrives while a transaction is under way waits for it and goes
    into the next one with every other write that arrived meanwhile. Each write is
    answered only after its transaction committed. If a shared transaction fails,
    each of its writes is tried again in a transaction of its own: a bad write
    fails alone and the others are stored.

    `expected()` says how many writes are on their way (messages being prepared,
    attempts under way, those pending included). When more are coming than are
    pending, the commit waits up to `delay` for them, as PostgreSQL's commit_delay
    does when it has commit_siblings: a commit costs as much as a few rows, and
    under load waiting 1 ms took ~20 % off the server's CPU per message sent
    (bench/send.py). A write with no company on its way goes at once (no timer, no
    added latency)."""

    def __init__(self, db: Database, max_batch: int = 64, max_batch_bytes: int = 8 << 20, *,
                 delay: float = 0.0, expected: Callable[[], int] = lambda: 0):
        self.db = db
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.delay = delay
        self.expected = expected
        self._pending: list[tuple[NewOutbound | Finish, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # transactions committed, for tests and curiosity
        self.writes = 0

    def submit(self, op: NewOutbound | Finish) -> asyncio.Future[Any]:
        """The write's result, a future (no task of its own)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._pending.append((op, done))
        if self._task is None:
            self._task = loop.create_task(self._drain(), name="mailgate-outbox-writer")
        return done

    async def __call__(self, op: NewOutbound | Finish) -> Any:
        return await self.submit(op)

    async def wait_idle(self) -> None:
        """Until every write submitted has been answered."""
        while self._task is not None:
            await asyncio.gather(asyncio.shield(self._task), return_exceptions=True)

    def _take(self) -> list[tuple[NewOutbound | Finish, asyncio.Future[Any]]]:
        """The next batch: up to max_batch writes and about max_batch_bytes of messages."""
        n, size = 0, 0
        for op, _ in self._pending[:self.max_batch]:
            size += len(op.values["raw"]) if isinstance(op, NewOutbound) else 0
            if n and size > self.max_batch_bytes:
                break
            n += 1
        batch, self._pending = self._pending[:n], self._pending[n:]
        return batch

    async def _drain(self) -> None:
        batch: list[tuple[NewOutbound | Finish, asyncio.Future[Any]]] = []
        try:
            while self._pending:
                if len(self._pending) < self.max_batch:
                    await asyncio.sleep(0)  # writes made ready by the last commit join this one
                    if self.delay and len(self._pending) < min(self.expected(), self.max_batch):
                        await asyncio.sleep(self.delay)
                batch = self._take()
                ops = [op for op, _ in batch]
                heavy = sum(op.values["size_bytes"] for op in ops if isinstance(op, NewOutbound)) > HEAVY_BYTES
                try:
                    results = await self.db.run(lambda s: OutboxStore(s).write(ops), heavy=heavy)
                except Exception as e:
                    if len(batch) == 1:
                        _settle(batch[0][1], error=e)
                        continue
                    log.warning("a shared outbox transaction of %d writes failed (%s); each is tried alone",
                                len(batch), type(e).__name__)
                    for op, done in batch:
                        try:
                            result = (await self.db.run(lambda s, op=op: OutboxStore(s).write([op]), heavy=heavy))[0]
                        except Exception as alone:
                            _settle(done, error=alone)
                        else:
                            _settle(done, result)
                    continue
                self.batches += 1
                self.writes += len(batch)
                for (_, done), result in zip(batch, results):
                    _settle(done, result)
        except BaseException:  # cancelled (shutdown): nobody is left waiting forever
            for _, done in batch + self._pending:
                done.cancel()
            self._pending = []
            raise
        finally:
            self._task = None


class _Ids:
    """Random (version 4) UUIDs as strings, like str(uuid.uuid4()), from os.urandom
    read 4 KB at a time. os.urandom lets go of the GIL for its system call, and on a
    busy server getting it back costs the event loop ~50 µs; this pays that once per
    256 ids. Event loop only (not thread-safe); a forked child starts afresh."""

    def __init__(self) -> None:
        self._buffer = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._buffer, self._at = b"", 0

    def __call__(self) -> str:
        if self._at >= len(self._buffer):
            self._buffer, self._at = os.urandom(4096), 0
        raw = self._buffer[self._at:self._at + 16]
        self._at += 16
        return str(uuid.UUID(bytes=raw, version=4))


_new_id = _Ids()


def check_request(request_id: str, reply_to_message_id: str, v: Violations) -> None:
    """The limits of SendEmail's fields beside the draft (compose.check_limits)."""
    if len(request_id) > limits.REQUEST_ID:
        v.add("request_id", limits.too_long(limits.REQUEST_ID, len(request_id)))
    elif problem := compose.text_problem(request_id):
        v.add("request_id", problem)
    if len(reply_to_message_id) > limits.MESSAGE_ID:
        v.add("reply_to_message_id", limits.too_long(limits.MESSAGE_ID, len(reply_to_message_id)))


def _settle(done: asyncio.Future[Any], result: Any = None, *, error: BaseException | None = None) -> None:
    if done.done():  # the caller gave up waiting; the write stands
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)


class _NotStored(Exception):
    """A first attempt's message was not inserted after all (a duplicate request_id,
    the provider changed meanwhile, the write failed): nothing to hand over or record."""


async def _nothing() -> None:
    return None


def _stored_check(writing: asyncio.Future[Any]) -> Callable[[], Awaitable[None]]:
    """Claimed.stored for a first attempt made while `writing` (GroupCommit) inserts."""
    async def stored() -> None:
        try:
            result = await asyncio.shield(writing)
        except Exception as e:
            raise _NotStored() from e
        if not isinstance(result, Claimed):
            raise _NotStored()
    return stored


class Outbox:
    def __init__(self, db: Database, records: ProviderRecords, drivers: DriverRegistry, ctx: DriverContext,
                 settings: OutboxSettings, pages: paging.PageTokens):
        self.db, self.records, self.drivers, self.ctx = db, records, drivers, ctx
        self.pages = pages
        self.budget = ByteBudget(settings.budget_bytes, settings.budget_wait, "SendEmail")
        self.settings = settings
        self._wake = asyncio.Event()
        self._attempted: dict[str, asyncio.Future[Outbound | None]] = {}
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        # Leases of the attempts waiting for a slot or under way: message id -> (token, end).
        self._leases: dict[str, tuple[str, datetime]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._preparing = 0  # SendEmail calls composing a message, about to write it
        self._write = GroupCommit(self.db, settings.max_batch, delay=settings.commit_delay,
                                  expected=lambda: self._preparing + len(self._inflight))
        # Providers as SendEmail last read them, with their fingerprint: checked in the
        # transaction that inserts the message, so a change is never missed (see send).
        self._senders: dict[str, tuple[StoredProvider, Any]] = {}

    # -- submit
    async def send(self, provider_id: str, draft: compose.Draft, *, reply_to_message_id: str = "",
                   reply_to_outbound: str = "", request_id: str = "") -> Outbound:
        """Checks and composes the message, commits it to the outbox, makes the first
        attempt and waits for it (up to first_attempt_wait).

        The provider comes from a cache, but the transaction that inserts the message
        checks that the provider is still what the message was composed from (its
        fingerprint: version and secrets); if not, the message is composed again from
        a fresh read. A request_id already stored returns the first call's message:
        found by that same transaction, or, when this call cannot be sent (the
        provider deleted or no longer GREEN, bad input), looked up before refusing.

        Its limits are checked first, then it takes its share of the byte budget (its
        request and the message it composes), held until it returns."""
        v = Violations()
        check_request(request_id, reply_to_message_id, v)
        compose.check_limits(draft, max_bytes=self.settings.max_message_bytes,
                             max_recipients=self.settings.max_recipients, v=v)
        v.raise_if_any()
        async with self.budget.hold(compose.estimated_size(draft) + compose.payload_size(draft)):
            return await self._send(provider_id, draft, reply_to_message_id, reply_to_outbound, request_id)

    async def _send(self, provider_id: str, draft: compose.Draft, reply_to_message_id: str,
                    reply_to_outbound: str, request_id: str) -> Outbound:
        loop = asyncio.get_running_loop()
        for try_ in range(3):
            self._preparing += 1  # one of GroupCommit's expected writes: it is submitted in this step
            try:
                item, stored = await self._prepare(provider_id, draft, reply_to_message_id, reply_to_outbound,
                                                   request_id, cached=try_ == 0)
            except Exception:
                if request_id:
                    first = await self.db.run(lambda s: OutboxStore(s).find_request(provider_id, request_id))
                    if first:
                        return first
                raise
            finally:
                self._preparing -= 1
            if try_ == 2:  # changed under us three times running: the read we just made will do
                item = replace(item, provider=None)
            message_id = item.values["id"]
            attempted: asyncio.Future[Outbound | None] = loop.create_future()
            self._attempted[message_id] = attempted
            try:
                writing = self._write.submit(item)
                early = self._handover_ok(stored)
                if early:  # the first attempt starts now; it hands the message over once stored
                    await self._start_attempt(Claimed(
                        Outbound.of_values(item.values), item.values["mail_from"], item.values["raw"],
                        item.values["lease_token"], item.values["lease_until"], stored, _stored_check(writing)))
                result = await asyncio.shield(writing)
            except BaseException as e:
                self._attempted.pop(message_id, None)
                # A concurrent retry with the same request_id (another process) won the race?
                if isinstance(e, Exception) and request_id:
                    first = await self.db.run(lambda s: OutboxStore(s).find_request(provider_id, request_id))
                    if first:
                        return first
                raise
            if isinstance(result, Claimed):
                break
            self._attempted.pop(message_id, None)
            if isinstance(result, Duplicate):
                return result.first
            assert result is STALE
            self._senders.pop(provider_id, None)  # compose again from a fresh read
        log.info("queued %s (%s) through provider %s", message_id, result.message.message_id, provider_id)
        if not early:
            await self._start_attempt(replace(result, provider=stored))
        # The attempt is a task of its own: a caller that gives up (or times out, None)
        # stops waiting for it, never the attempt itself.
        timer = loop.call_later(self.settings.first_attempt_wait, _settle, attempted, None)
        try:
            done = await attempted
        finally:
            timer.cancel()
            self._attempted.pop(message_id, None)
        return done if done is not None else await self.get(message_id)

    def _handover_ok(self, stored: StoredProvider) -> bool:
        """Whether a first attempt may start before the message is stored (see api.Envelope.handover)."""
        driver = self.drivers.get(stored.config.type)
        return driver is not None and driver.capabilities.handover

    async def _sender(self, provider_id: str, cached: bool) -> tuple[StoredProvider, Any]:
        hit = self._senders.get(provider_id) if cached else None
        if hit is None:
            hit = await self.records.get_with_fingerprint(provider_id)
            self._senders[provider_id] = hit
        return hit

    async def _prepare(self, provider_id: str, draft: compose.Draft, reply_to_message_id: str,
                       reply_to_outbound: str, request_id: str, cached: bool
                       ) -> tuple[NewOutbound, StoredProvider]:
        stored, fingerprint = await self._sender(provider_id, cached)
        config = stored.config
        driver = self.drivers.get(config.type)
        v = Violations()
        if driver is None or not driver.capabilities.send:
            v.add("provider", f"providers of type {config.type!r} cannot send")
        elif stored.state is not State.GREEN:
            v.add("provider", f"provider {config.display_name!r} is {stored.state.value}"
                              + (f": {stored.state_reason}" if stored.state_reason else "")
                              + "; activate it first")
        if compose.recipient_chars(draft) <= INLINE_CHECK_CHARS:
            compose.check_draft(draft, max_bytes=self.settings.max_message_bytes,
                                max_recipients=self.settings.max_recipients, v=v)
        else:  # parsing many addresses is CPU work: in the worker pool, not on the event loop
            await self.ctx.run_blocking(lambda: compose.check_draft(
                draft, max_bytes=self.settings.max_message_bytes, max_recipients=self.settings.max_recipients, v=v))

        answered = ""
        if reply_to_message_id.strip():
            answered = compose.normalize_message_id(reply_to_message_id) or ""
            if not answered:
                v.add("reply_to_message_id", f"{limits.shown(reply_to_message_id)} is not a Message-ID")
        v.raise_if_any()
        if reply_to_outbound:
            answered = (await self.get(reply_to_outbound)).message_id
        thread, conversation = None, _new_id()
        if answered:
            known = await self.db.run(lambda s: OutboxStore(s).thread(answered))
            if known:
                conversation = known[0]
            if config.active_reference:
                thread = compose.Thread(message_id=answered, references=known[1] if known else ())
        now = utcnow()
        message_id = compose.new_message_id(config.account)
        sender = compose.Sender(config.account, config.from_name, config.reply_to)

        def build() -> bytes:
            return compose.compose(draft, sender, message_id=message_id, date=now, thread=thread)

        if compose.estimated_size(draft) <= self.settings.inline_compose_bytes:
            raw = build()  # a fraction of a millisecond: cheaper here than a hop to a thread
        else:  # building a large message is CPU work: in the worker pool, not on the event loop
            raw = await self.ctx.run_blocking(build)
        if len(raw) > self.settings.max_message_bytes:
            raise InvalidArgument([Violation("size", f"the message is {len(raw):,} bytes; "
                                             f"the limit is {self.settings.max_message_bytes:,}")])
        values = dict(
            id=_new_id(), provider_id=provider_id, request_id=request_id or None,
            message_id=message_id, conversation_id=conversation, state=OutState.QUEUED.value,
            mail_from=config.account, to=list(draft.to), cc=list(draft.cc), bcc=list(draft.bcc),
            subject=compose.reply_subject(draft.subject) if thread else draft.subject,
            attachments=[{"filename": a.filename, "content_type": a.content_type, "size_bytes": len(a.data)}
                         for a in draft.attachments],
            # Leased to this process at once: the first attempt starts right here,
            # and if we die before it ends, the lease runs out and the worker takes it.
            raw=raw, size_bytes=len(raw), attempts=0, next_attempt_time=now,
            lease_until=now + timedelta(seconds=self.settings.lease), lease_token=_new_id(),
            last_code=0, last_error="", last_transient=False, create_time=now, update_time=now,
            sent_time=None)
        references = [*thread.references, thread.message_id] if thread else []
        return NewOutbound(values, references, (provider_id, fingerprint)), stored

    # -- read
    async def get(self, message_id: str) -> Outbound:
        return await self.db.run(lambda s: OutboxStore(s).get(message_id))

    async def list(self, filter_text: str, page_token: str, size: int, within: Principal = UNRESTRICTED
                   ) -> paging.Page[Outbound]:
        filters = paging.parse_filter(filter_text, {
            "provider": paging.id_from_name("providers"), "state": paging.state_name(OutState), "conversation_id": str})
        if "provider" in filters:
            filters["provider_id"] = filters.pop("provider")
        where = scope.where(within, OutboundRow.provider_id)
        return await self.pages.page(
            lambda after, limit: self.db.run(lambda s: OutboxStore(s).list(filters, after, limit, where)),
            lambda r: (r.create_time, r.id), "outboundMessages", filter_text, page_token, size)

    async def provider_changed(self, change: ProviderChange) -> None:
        """A provider that is GREEN after a change: what waited for it goes now."""
        provider_id, stored = change.provider_id, change.stored
        self._senders.pop(provider_id, None)
        if stored is None or stored.state is not State.GREEN:
            return
        count = await self.db.run(lambda s: OutboxStore(s).due_now(provider_id, utcnow()))
        if count:
            log.info("provider %s is GREEN: %d waiting message(s) due now", provider_id, count)
            self._wake.set()

    # -- the worker
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="mailgate-outbox")
        self._renewer = loop.create_task(self._keep_leases(), name="mailgate-outbox-leases")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._inflight:  # attempts under way finish and record their result (their leases kept)
            await asyncio.gather(*self._inflight, return_exceptions=True)
        await self._write.wait_idle()
        if self._renewer:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)

    async def _keep_leases(self) -> None:
        """Renews, every third of the lease, the leases that would run out before the
        next round: an attempt may last far longer than the lease (the SMTP deadline
        grows with the message, ~500 s for 25 MB), and one waiting for a slot too. A
        quick attempt is never renewed: it ends before the first round finds it due."""
        lease = timedelta(seconds=self.settings.lease)
        while True:
            await asyncio.sleep(self.settings.lease / 3)
            now = utcnow()
            due = [(mid, token) for mid, (token, until) in self._leases.items() if until - now < lease * 2 / 3]
            if not due:
                continue
            try:
                held = await self.db.run(lambda s: OutboxStore(s).renew(due, now + lease))
            except Exception:
                log.exception("renewing %d outbox lease(s) failed; trying again in %.0f s",
                              len(due), self.settings.lease / 3)
                continue
            for mid, token in due:
                if self._leases.get(mid, ("",))[0] != token:
                    continue  # the attempt ended meanwhile
                if mid in held:
                    self._leases[mid] = (token, now + lease)
                else:  # its result will not be recorded (see Finish)
                    log.warning("the lease of outbound message %s was taken over while an attempt ran", mid)
                    del self._leases[mid]

    async def _run(self) -> None:
        while True:
            try:
                self._wake.clear()  # before looking: a wake-up during the look is not lost
                claimed = await self.db.run(lambda s: OutboxStore(s).claim_due(
                    utcnow(), self.settings.concurrency, timedelta(seconds=self.settings.lease)), heavy=True)
                for c in claimed:
                    await self._start_attempt(c)
                if len(claimed) == self.settings.concurrency:
                    continue  # more may be due
                due = await self.db.run(lambda s: OutboxStore(s).next_due(utcnow()))
                wait = 5.0 if due is None else max(0.0, min(5.0, (due - utcnow()).total_seconds()))
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox loop failed; retrying in 1 s")
                await asyncio.sleep(1)

    async def _start_attempt(self, claimed: Claimed) -> None:
        self._leases[claimed.message.id] = (claimed.lease, claimed.lease_until)  # kept while it waits too
        try:
            await self._slots.acquire()  # bounded attempts in flight; callers wait their turn
        except BaseException:
            self._forget_lease(claimed)
            raise
        task = asyncio.get_running_loop().create_task(self._attempt(claimed))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _forget_lease(self, claimed: Claimed) -> None:
        if self._leases.get(claimed.message.id, ("",))[0] == claimed.lease:  # not a later claim's
            del self._leases[claimed.message.id]

    async def _attempt(self, claimed: Claimed) -> None:
        m = claimed.message
        try:
            result = await self._deliver(claimed)
        except _NotStored:  # a first attempt made while inserting, which stored nothing
            result = None
        except Exception:
            log.exception("delivery of %s failed unexpectedly", m.id)
            try:
                await (claimed.stored or _nothing)()
                result = await self._record(claimed, OutState.RETRYING, error="internal error", transient=True)
            except _NotStored:
                result = None
        finally:
            self._slots.release()
            self._forget_lease(claimed)
        waiter = self._attempted.get(m.id)
        if waiter and not waiter.done():
            waiter.set_result(result)

    async def _deliver(self, claimed: Claimed) -> Outbound:
        m = claimed.message
        # Each path below awaits the message's storing (claimed.stored) before it
        # writes the row; the SMTP exchange, through the driver's handover.
        stored_row = claimed.stored or _nothing
        try:  # the first attempt comes with the provider SendEmail just read
            stored = claimed.provider or await self.records.get(m.provider_id)
        except NotFound:
            await stored_row()
            return await self._record(claimed, OutState.FAILED, error="the provider was deleted", counted=False)
        config = stored.config
        driver = self.drivers.get(config.type)
        now = utcnow()
        if stored.state is not State.GREEN or driver is None:
            until = now + timedelta(seconds=self.settings.not_ready_delay)
            await stored_row()
            await self.db.run(lambda s: OutboxStore(s).postpone(m.id, claimed.lease, until))
            self._wake.set()
            return await self.get(m.id)
        limits = driver.sending_limits(config)
        held = await self._over_limits(m.provider_id, limits.per_minute, limits.per_day, now)
        if held:
            await stored_row()
            await self.db.run(lambda s: OutboxStore(s).postpone(m.id, claimed.lease, held))
            self._wake.set()
            log.info("provider %s at its sending limit: %s waits until %s", m.provider_id, m.id, held)
            return await self.get(m.id)
        envelope = Envelope(compose.addr_spec(claimed.mail_from),
                            compose.envelope_recipients(compose.Draft(to=m.to, cc=m.cc, bcc=m.bcc)),
                            claimed.raw, handover=claimed.stored)
        try:
            said = await driver.send(config, envelope, self.ctx)
        except SendFailure as f:
            await stored_row()
            if f.auth_failed:
                await self.records.set_state(m.provider_id, reasons.login_refused(f.message))
                return await self._record(claimed, OutState.RETRYING, code=f.code, error=f.message, transient=True,
                                          delay=self.settings.not_ready_delay)
            if not f.transient:
                return await self._record(claimed, OutState.FAILED, code=f.code, error=f.message)
            if (now - m.create_time).total_seconds() > self.settings.give_up_after:
                return await self._record(claimed, OutState.FAILED, code=f.code, transient=True,
                                          error=f"gave up after {m.attempts + 1} attempts: {f.message}")
            return await self._record(claimed, OutState.RETRYING, code=f.code, error=f.message, transient=True)
        log.info("sent %s (%s): %s", m.id, m.message_id, said)
        return await self._record(claimed, OutState.SENT, code=250, error="")

    async def _record(self, claimed: Claimed, state: OutState, *, code: int = 0, error: str = "",
                      transient: bool = False, counted: bool = True, delay: float | None = None) -> Outbound:
        m = claimed.message
        now = utcnow()
        nxt = None
        if state is OutState.RETRYING:
            if delay is None:  # exponential backoff with jitter, so retries do not march in step
                delay = min(self.settings.retry_cap, self.settings.retry_base * 2 ** m.attempts)
                delay *= random.uniform(0.5, 1.5)
            nxt = now + timedelta(seconds=delay)
        if state is not OutState.SENT and error:
            log.info("%s %s: %s %s", m.id, state.value, code or "", error)
        done = await self._write(Finish(m, claimed.lease, now, state, counted=counted, next_attempt=nxt,
                                        code=code, error=error, transient=transient))
        if isinstance(done, LeaseLost):
            log.warning("%s: the result of an attempt (%s) was not recorded: its lease was taken over",
                        m.id, state.value)
            return done.current
        if nxt:
            self._wake.set()  # the worker may be sleeping past the new due time
        return done

    async def _over_limits(self, provider_id: str, per_minute: int, per_day: int,
                           now: datetime) -> datetime | None:
        """When the provider may send again, or None if it may now."""
        for limit, window in ((per_minute, timedelta(minutes=1)), (per_day, timedelta(days=1))):
            if limit:
                count = await self.db.run(lambda s: OutboxStore(s).sent_since(provider_id, now - window))
                if count >= limit:
                    return now + window / max(limit, 1)
        return None

