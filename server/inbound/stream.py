"""One consumer's subscription to a campaign queue: the leases it holds and the
batches of deliveries it is given.

Its window is counted in messages and in bytes (max_in_flight, max_in_flight_bytes).
A stream claims its share of the free window (the window split among the streams
waiting on the same campaign; the one served longest ago is woken first, so that
they claim in turns and none starves the others) in one transaction, and sends what
it took in batches of about RESPONSE_BYTES (one bigger message goes alone; raw
bytes, when the subscription asks for them, count too), their bodies parsed side by side in
ParseWorkers. Its window counts the leases it still holds: those acknowledged
anywhere (AckInboundMail, another stream, another replica: each lease token names
its stream, which is told) or past their deadline no longer count. It sleeps until a
commit, an acknowledgement or a give-back wakes it, its first lease expires, or it
is time to look for leases that expired elsewhere. A consumer that leaves (its
stream ends, or its call is cancelled) gives back at once whatever it holds.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import AsyncIterator, Iterator, NamedTuple

from ..clock import utcnow
from .messages import Delivery, new_holder, split_ack_id
from .parse import Body
from .queue import InboundQueue, Subscription, holder_topic

log = logging.getLogger("mailgate.inbound")

# Under gRPC's default 4 MB receive limit, and the first of a large claim reaches
# the consumer before the rest is parsed.
RESPONSE_BYTES = 1 << 20

Batch = list[tuple[Delivery, Body | None]]  # deliveries with their bodies (None: oversized)


class _Lease(NamedTuple):
    token: str
    until: datetime  # its deadline
    size: int  # the message's bytes


class Stream:
    def __init__(self, queue: InboundQueue, sub: Subscription):
        self.queue, self.sub = queue, sub
        self.holder = new_holder()  # in every lease token this stream is given
        # message id -> the lease of this stream's delivery of it. The window counts
        # those whose deadline has not passed: an expired lease is anyone's.
        self._held: dict[str, _Lease] = {}
        self._bytes = 0  # the sizes of the messages held, together
        self._wake = asyncio.Event()
        # Set when this stream's leases may have been acknowledged or changed elsewhere
        # (AckInboundMail, another stream, another replica): the next claim looks
        # which of them are still held.
        self._elsewhere = asyncio.Event()
        self._left = False
        self._topics = [*sub.topics, holder_topic(self.holder)]
        queue.subscribe(self._topics, self._wake)
        queue.subscribe([holder_topic(self.holder)], self._elsewhere)
        log.info("consumer %r subscribed to %s", sub.consumer, ", ".join(sub.topics))

    async def batches(self, until: asyncio.Future[None]) -> AsyncIterator[Batch]:
        """Batches of deliveries, in arrival order, until `until` is done (the
        consumer stops asking) or the stream is left."""
        swept = False  # the last sleep ended without a wake-up
        while not until.done() and not self._left:
            self._wake.clear()  # before looking: a wake-up that comes while we look is not lost
            self._expire(utcnow())
            room = self._room()
            if swept and room <= 0:
                self._elsewhere.set()  # a wake-up missed (a replica's notification lost) costs a sweep
            recheck = [(mid, lease.token) for mid, lease in self._held.items()] if self._elsewhere.is_set() else []
            self._elsewhere.clear()
            deliveries: list[Delivery] = []
            share = 0
            if room > 0 or recheck:
                # A share of the room: the others waiting on the campaign claim between our turns.
                share = -(-room // max(1, self.queue.consumers(self.sub.topics))) if room > 0 else 0
                still, deliveries = await self.queue.claim(
                    self.sub, share, holder=self.holder, recheck=recheck,
                    max_bytes=max(0, self.sub.max_in_flight_bytes - self._bytes))
                if self._left:  # while claiming: nobody will release them but us
                    await self.queue.release([(d.message.id, d.token) for d in deliveries])
                    return
                self._settle(recheck, still)
            if not deliveries:
                swept = await self._sleep(until)
                continue
            swept = False
            self.queue.served(self.sub.topics, self._wake)
            for d in deliveries:
                self._held[d.message.id] = _Lease(d.token, d.until, d.message.size_bytes)
                self._bytes += d.message.size_bytes
            # A message sent with its raw bytes counts twice: they come on top of its parsed parts.
            parts = list(_by_size(deliveries, RESPONSE_BYTES // 2 if self.sub.include_raw else RESPONSE_BYTES))
            parsing = [asyncio.ensure_future(self.queue.parsers.bodies(
                [None if d.message.oversized else d.message.raw for d in part])) for part in parts]
            try:
                for part, bodies in zip(parts, parsing):
                    yield list(zip(part, await bodies))
            finally:
                for pending in parsing:
                    pending.cancel()
            if len(deliveries) < share:  # the queue had no more: wait for news, in turn with the others
                swept = await self._sleep(until)

    def _room(self) -> int:
        """How many more messages the window takes: none once its bytes are full."""
        if self._held and self._bytes >= self.sub.max_in_flight_bytes:
            return 0
        return self.sub.max_in_flight - len(self._held)

    def _drop(self, mid: str) -> None:
        self._bytes -= self._held.pop(mid).size

    def _token(self, mid: str) -> str:
        """The token of this stream's lease of the message; "" when it holds none."""
        lease = self._held.get(mid)
        return lease.token if lease else ""

    def _expire(self, now: datetime) -> None:
        """Leases past their deadline leave the window: the next claim (this stream's
        or another's) delivers them again, or dead-letters them."""
        for mid in [mid for mid, lease in self._held.items() if lease.until <= now]:
            self._drop(mid)

    def _settle(self, recheck: list[tuple[str, str]], still: dict[str, datetime]) -> None:
        """After a claim that rechecked these leases: those no longer held leave the
        window; the others keep their deadline as stored."""
        for mid, token in recheck:
            if self._token(mid) != token:
                continue  # acknowledged or given back here meanwhile
            if mid in still:
                self._held[mid] = self._held[mid]._replace(until=still[mid])
            else:
                self._drop(mid)

    async def _sleep(self, until: asyncio.Future[None]) -> bool:
        """Until a wake-up, the consumer's leaving, the first of this stream's leases
        to expire, or the next look for leases that expired elsewhere; True when
        nothing woke it."""
        timeout = self.queue.settings.sweep_interval
        if self._held:
            first = min(lease.until for lease in self._held.values())
            timeout = max(0.0, min(timeout, (first - utcnow()).total_seconds()))
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waiter, until}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        return not self._wake.is_set() and not until.done()

    async def ack(self, ack_ids: list[str]) -> None:
        await self.queue.ack(ack_ids, holder=self.holder)
        full = self._room() <= 0
        for mid, token in filter(None, map(split_ack_id, ack_ids)):
            if self._token(mid) == token:
                self._drop(mid)
        if full:  # room for more; with room already, only news of the queue is worth a look
            self._wake.set()

    async def modify_deadlines(self, ack_ids: list[str], seconds: list[int]) -> None:
        """New deadlines, from now; 0 seconds gives the message back to the queue."""
        now = utcnow()
        await self.queue.extend(ack_ids, seconds, holder=self.holder, now=now)
        full = self._room() <= 0
        for ack_id, sec in zip(ack_ids, seconds):
            pair = split_ack_id(ack_id)
            if not pair or self._token(pair[0]) != pair[1]:
                continue
            if sec <= 0:
                self._drop(pair[0])
            else:
                self._held[pair[0]] = self._held[pair[0]]._replace(until=now + timedelta(seconds=sec))
        if full:  # room for more (what was given back wakes the campaign's consumers in turn)
            self._wake.set()

    def leave_soon(self) -> None:
        """`leave` in a task of its own, which shutdown waits for: from the end of the
        consumer's call, which may come long before the stream's own end."""
        self.queue.track(asyncio.get_running_loop().create_task(self.leave()))

    async def leave(self) -> None:
        """Whatever this consumer did not acknowledge goes back to the queue now (from
        the stream's end or from the call's, whichever comes first)."""
        if self._left:
            return
        self._left = True
        self._wake.set()  # a waiting batches() ends
        self.queue.unsubscribe(self._topics, self._wake)
        self.queue.unsubscribe([holder_topic(self.holder)], self._elsewhere)
        leases = [(mid, lease.token) for mid, lease in self._held.items()]
        self._held.clear()
        self._bytes = 0
        await self.queue.release(leases)
        log.info("consumer %r left; %d unacknowledged message(s) back in the queue", self.sub.consumer, len(leases))


def _by_size(deliveries: list[Delivery], limit: int) -> Iterator[list[Delivery]]:
    part: list[Delivery] = []
    size = 0
    for d in deliveries:
        if part and size + d.message.size_bytes > limit:
            yield part
            part, size = [], 0
        part.append(d)
        size += d.message.size_bytes
    if part:
        yield part
