"""The campaign queues: mail committed by the watchers, streamed to consumers.

The queue's state lives in the store (leases with tokens, claimed with SKIP
LOCKED), never only in memory: a consumer or a server can die at any moment and
an unacknowledged message is simply delivered again. In-process wake-ups make a
committed message reach a waiting consumer at once; expired leases are looked
for every second.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Sequence

from . import parse as inbound_parse, wakeups
from .. import limits, paging
from ..access import scope
from ..access.tokens import UNRESTRICTED, Principal
from ..clock import utcnow
from .messages import Delivery, InboundMessage, InState, holder_of, split_ack_id
from .parse_workers import ParseWorkers
from .store import INBOUND, Arrival, InboundStore
from .numbers import MailboxIds
from ..runtime import Slots
from ..store.db import Database

log = logging.getLogger("mailgate.inbound")

LEASE_SWEEP = 1.0  # seconds between looks for expired leases


@dataclass
class InboundSettings:
    max_message_bytes: int = 50 * 1024 * 1024  # bigger mail is queued with headers only parsed
    # failed attempts (given back, or let expire) after which a message is dead-lettered;
    # per campaign in `campaigns`, 0: never (see dead_letter_after)
    dead_letter_after: int = 5
    campaigns: dict[str, int] = field(default_factory=dict)
    default_deadline: int = 60
    default_in_flight: int = 10
    default_in_flight_bytes: int = 100 << 20
    sweep_interval: float = LEASE_SWEEP  # a waiting stream looks for expired leases this often
    claim_bytes: int = limits.DEFAULT_CLAIM_BYTES  # raw bytes one claim reads at most (one message at least)
    parse_workers: int = 0               # processes parsing mail (ParseWorkers)

    def limit(self, campaign: str) -> int:
        """A campaign's dead_letter_after."""
        return self.campaigns.get(campaign, self.dead_letter_after)


@dataclass(frozen=True)
class Subscription:
    campaign: str | None
    provider_ids: list[str]
    consumer: str
    max_in_flight: int
    deadline: int
    include_raw: bool = False  # deliveries carry the raw bytes too
    max_in_flight_bytes: int = 100 << 20

    @property
    def topics(self) -> list[str]:
        return [f"campaign:{self.campaign}"] if self.campaign else [f"provider:{p}" for p in self.provider_ids]


class InboundQueue:
    def __init__(self, db: Database, run_blocking: Callable[..., Awaitable[Any]], settings: InboundSettings,
                 loop: asyncio.AbstractEventLoop, pages: paging.PageTokens):
        """`run_blocking(fn, *args)` runs CPU work off the loop; `loop` is the one the
        consumers wait on (wake-ups come from the watchers' threads and the listener's)."""
        self.db, self.run_blocking, self.settings = db, run_blocking, settings
        self.pages = pages
        self._loop = loop
        self._waiters: dict[str, dict[asyncio.Event, None]] = defaultdict(dict)  # in subscription order
        self._claims = Slots(1)
        self._releasing: set[asyncio.Task[None]] = set()
        self.parsers = ParseWorkers(settings.parse_workers, run_blocking)

    # -- watchers (blocking, from their threads)
    def position(self, provider_id: str, folder: str) -> tuple[int | None, int]:
        return self.db.run_sync(lambda s: InboundStore(s).position(provider_id, folder))

    def pop3_numbers(self, provider_id: str, folder: str, uidls: list[str]) -> dict[str, int]:
        """The numbers POP3 messages are queued under (see transport.pop3_poll)."""
        return self.db.run_sync(lambda s: MailboxIds(s).numbers(provider_id, folder, uidls))

    def commit(self, provider_id: str, folder: str, uidvalidity: int,
               messages: list[tuple[int, bytes]]) -> list[str]:
        """Commits fetched messages (UID, exact bytes) to the provider's campaign queue;
        returns when they are durable (the watcher treats them as fetched only then).
        Only the headers are parsed here; bodies wait until a consumer asks."""
        envelopes = self.parsers.envelopes([raw for _, raw in messages], self.settings.max_message_bytes)
        arrivals = [arrival(uid, raw, env) for (uid, raw), env in zip(messages, envelopes)]

        def enqueue(s: Any) -> tuple[str, list[str]]:  # the provider read and the batch: one transaction
            store = InboundStore(s)
            campaign, threaded = store.provider_queue(provider_id)
            queued = store.enqueue(provider_id, campaign, folder, uidvalidity, arrivals, utcnow(), threaded)
            if queued:  # other replicas' consumers hear of it on commit
                wakeups.notify(s, topics(campaign, provider_id))
            return campaign, queued
        campaign, queued = self.db.run_sync(enqueue)
        if queued:
            log.info("provider %s: %d message(s) queued on campaign %r", provider_id, len(queued), campaign)
            self.wake(topics(campaign, provider_id))
        return queued

    def wake(self, topics: list[str]) -> None:
        """Wakes this process's consumers waiting on these topics; from any thread.
        The first woken claims first (claims of a queue go one at a time): those
        served longest ago come first, so a trickle of mail is shared among them."""
        def set_events() -> None:
            for topic in topics:
                for event in list(self._waiters.get(topic, ())):
                    event.set()
        self._loop.call_soon_threadsafe(set_events)

    def served(self, topics: list[str], event: asyncio.Event) -> None:
        """The consumer waiting on `event` was just given mail: it is woken last next time."""
        for topic in topics:
            waiters = self._waiters.get(topic)
            if waiters is not None and waiters.pop(event, False) is None:
                waiters[event] = None

    def consumers(self, topics: list[str]) -> int:
        """How many of this process's streams wait on any of these topics."""
        return len({e for topic in topics for e in self._waiters.get(topic, ())})

    # -- consumers
    def subscribe(self, topics: list[str], event: asyncio.Event) -> None:
        """`event` is set when any of `topics` has news (see wake)."""
        for topic in topics:
            self._waiters[topic][event] = None

    def unsubscribe(self, topics: list[str], event: asyncio.Event) -> None:
        for topic in topics:
            waiters = self._waiters.get(topic)
            if waiters is not None:
                waiters.pop(event, None)
                if not waiters:
                    del self._waiters[topic]

    async def claim(self, sub: Subscription, limit: int, *, holder: str = "", max_bytes: int | None = None,
                    recheck: list[tuple[str, str]] | None = None) -> tuple[dict[str, datetime], list[Delivery]]:
        """Up to `limit` deliveries for `holder`, of at most `max_bytes` together (but
        at least one), in one transaction. `recheck`: leases the holder counts in its
        window that may have been acknowledged or given back elsewhere; each that is
        no longer held leaves room for one more. Returns the deadlines of those still
        held, and the deliveries."""
        def claim(s: Any) -> tuple[dict[str, datetime], list[Delivery]]:
            store = InboundStore(s)
            still = store.leases(recheck) if recheck else {}
            deliveries = store.claim(
                campaign=sub.campaign, provider_ids=sub.provider_ids, consumer=sub.consumer,
                limit=limit + len(recheck or ()) - len(still), deadline=timedelta(seconds=sub.deadline),
                now=utcnow(), dead_letter_after=self.settings.limit, holder=holder, max_bytes=max_bytes or 0,
                read_bytes=self.settings.claim_bytes, with_raw=sub.include_raw)
            return still, deliveries
        # One claim of a queue at a time in this process, in the order they were asked
        # (the order the consumers were woken, see wake): on PostgreSQL claims run side
        # by side, and the first transaction to lock the rows would take them.
        key = tuple(sub.topics)
        await self._claims.acquire(key)
        try:
            claiming = asyncio.ensure_future(self.db.run(claim, heavy=True))
            try:
                return await asyncio.shield(claiming)
            except asyncio.CancelledError:
                # The consumer left while the claim was committing: give the leases back
                # rather than leave them to expire.
                _, deliveries = await claiming
                await self.release([(d.message.id, d.token) for d in deliveries])
                raise
        finally:
            self._claims.release(key)

    async def ack(self, ack_ids: list[str], *, holder: str | None = None) -> int:
        """Acknowledges deliveries, from anywhere; tells their holders but `holder`
        (the caller's own stream, which knows), on every replica."""
        pairs = [p for p in map(split_ack_id, ack_ids) if p]
        told = holder_topics(pairs, holder)

        def ack(s: Any) -> int:
            done = InboundStore(s).ack(pairs, utcnow())
            if done and told:
                wakeups.notify(s, told)
            return done
        done = await self.db.run(ack) if pairs else 0
        if done and told:
            self.wake(told)
        return done

    async def extend(self, ack_ids: list[str], seconds: list[int], *, holder: str | None = None,
                     now: datetime | None = None) -> None:
        """New deadlines, `seconds` from `now`; 0 gives the message back to the queue.
        Their holders but `holder` are told."""
        triples = [(*p, max(0, sec)) for p, sec in zip(map(split_ack_id, ack_ids), seconds) if p]
        if triples:
            at = now or utcnow()
            await self._give_back([mid for mid, _, sec in triples if sec == 0],
                                  lambda store: store.extend(triples, at, self.settings.limit),
                                  holder_topics([(mid, token) for mid, token, _ in triples], holder))

    def track(self, task: asyncio.Task[None]) -> None:
        """A give-back that outlives its caller (a consumer's call ended, or was
        cancelled while giving back): shutdown waits for it before the store closes."""
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def drain(self) -> None:
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)

    async def release(self, deliveries: list[tuple[str, str]]) -> None:
        if deliveries:
            await self._give_back([mid for mid, _ in deliveries],
                                  lambda store: store.release(deliveries))

    async def _give_back(self, ids: list[str], change: Callable[[InboundStore], None],
                         also: Sequence[str] = ()) -> None:
        """Runs `change`, then wakes the consumers, of every replica, of those of `ids`
        it put back in the queue (another consumer waiting on them gets them at once)
        and of the topics `also`. Runs to its end even when the caller is cancelled (a
        consumer's call ending while its leases are given back): the change commits
        anyway, and so must the wake-up happen."""
        def run(s: Any) -> list[str]:
            store = InboundStore(s)
            change(store)
            woken = sorted({t for c, p in store.queues_of(ids) for t in topics(c, p)}) if ids else []
            woken += also
            if woken:
                wakeups.notify(s, woken)
            return woken

        async def give_back() -> None:
            woken = await self.db.run(run)
            if woken:
                self.wake(woken)
        task = asyncio.get_running_loop().create_task(give_back())
        self.track(task)  # shutdown waits for it
        await asyncio.shield(task)

    # -- operators
    async def head(self, message_id: str) -> InboundMessage:
        return await self.db.run(lambda s: InboundStore(s).head(message_id))

    async def get(self, message_id: str, *, attachment_data: bool = False
                  ) -> tuple[InboundMessage, inbound_parse.Body | None]:
        """The message with its raw bytes, and its body parsed (None when oversized),
        with the attachments' content when `attachment_data`."""
        message = await self.db.run(lambda s: InboundStore(s).get(message_id), heavy=True)
        if message.oversized or message.raw is None:
            return message, None
        return message, await self.run_blocking(
            functools.partial(inbound_parse.parse_body, message.raw, with_content=attachment_data))

    async def requeue(self, message_id: str) -> InboundMessage:
        def requeue(s: Any) -> InboundMessage:
            message = InboundStore(s).requeue(message_id)
            wakeups.notify(s, topics(message.campaign, message.provider_id))
            return message
        message = await self.db.run(requeue)
        self.wake(topics(message.campaign, message.provider_id))
        return message

    async def list(self, filter_text: str, page_token: str, size: int, within: Principal = UNRESTRICTED
                   ) -> paging.Page[InboundMessage]:
        filters: dict[str, Any] = paging.parse_filter(filter_text, {
            "provider": paging.id_from_name("providers"), "campaign": str, "state": paging.state_name(InState), "conversation_id": str})
        if "provider" in filters:
            filters["provider_id"] = filters.pop("provider")
        where = scope.where(within, INBOUND.c.provider_id, INBOUND.c.campaign)
        return await self.pages.page(
            lambda after, limit: self.db.run(lambda s: InboundStore(s).list(filters, after, limit, where)),
            lambda m: (m.receive_time, str(m.seq)), "inboundMessages", filter_text, page_token, size)


def topics(campaign: str, provider_id: str) -> list[str]:
    """What a message on this campaign from this provider wakes (see Subscription.topics)."""
    return [f"campaign:{campaign}", f"provider:{provider_id}"]


def holder_topic(holder: str) -> str:
    """What a change to a lease held by `holder` (a consumer's stream) wakes."""
    return f"holder:{holder}"


def holder_topics(pairs: list[tuple[str, str]], but: str | None) -> list[str]:
    """The topics of the holders of these (message id, lease token) pairs, but `but`."""
    return sorted({holder_topic(h) for _, token in pairs if (h := holder_of(token)) and h != but})


def arrival(uid: int, raw: bytes, env: inbound_parse.Envelope) -> Arrival:
    headers = {"from": list(env.from_), "to": list(env.to), "cc": list(env.cc), "reply_to": list(env.reply_to),
               "subject": env.subject, "date": env.date.isoformat() if env.date else None}
    return Arrival(uid=uid, raw=raw, message_id=env.message_id or "", content_hash=env.content_hash,
                   headers=headers, references=(*env.references, *env.in_reply_to),
                   automatic=env.automatic, oversized=env.oversized)
