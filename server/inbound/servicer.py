"""InboundService over gRPC: the StreamingPull-shaped stream, acks, reads."""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Iterator

import grpc
from google.protobuf import empty_pb2

from mailgate.v1 import inbound_service_pb2 as pb, inbound_service_pb2_grpc

from . import converters as conv
from ..converters import provider_id
from ..errors import InvalidArgument, Violation
from .queue import InboundQueue, Subscription
from .messages import Delivery, split_ack_id

log = logging.getLogger("mailgate.inbound")

MAX_IN_FLIGHT = 1000
# Deliveries are sent in responses of about this many message bytes (one bigger message
# goes alone): under gRPC's default 4 MB receive limit, and the first of a large claim
# reaches the consumer before the rest is parsed.
RESPONSE_BYTES = 1 << 20


class InboundServicer(inbound_service_pb2_grpc.InboundServiceServicer):
    def __init__(self, queue: InboundQueue):
        self.queue = queue

    async def StreamInboundMail(self, requests: AsyncIterator[pb.StreamInboundMailRequest],
                                context: grpc.aio.ServicerContext):
        first = await anext(aiter(requests), None)
        if first is None:
            return
        sub = self._subscription(first)
        held: dict[str, str] = {}  # message id -> lease token of this stream's deliveries
        wake = self.queue.subscribe(sub)
        reader = asyncio.get_running_loop().create_task(self._read(first, requests, held, wake))
        stream = _Stream(self.queue, sub, wake, held, reader)
        log.info("consumer %r subscribed to %s", sub.consumer, ", ".join(sub.topics))
        # A consumer that goes away (cancel, lost connection) ends the call at once, while
        # this generator may only be finalized much later: the call's end releases.
        loop = asyncio.get_running_loop()
        context.add_done_callback(lambda _: self.queue.track(loop.create_task(stream.leave())))
        try:
            while not reader.done():
                wake.clear()  # before looking: a wake-up that comes while we look is not lost
                room = sub.max_in_flight - len(held)
                deliveries = await self.queue.claim(sub, room) if room > 0 else []
                if deliveries:
                    for d in deliveries:
                        held[d.message.id] = d.token
                    # A claim takes the whole free window; it goes out in responses of about
                    # RESPONSE_BYTES, their bodies parsed side by side (ParseWorkers), each
                    # response sent as soon as its own are.
                    parts = list(_by_size(deliveries, RESPONSE_BYTES))
                    parsing = [asyncio.ensure_future(self.queue.parsers.bodies(
                        [None if d.message.oversized else d.message.raw for d in part])) for part in parts]
                    try:
                        for part, bodies in zip(parts, parsing):
                            messages = await self.queue.run_blocking(
                                conv.received_to_proto, list(zip(part, await bodies)))
                            yield pb.StreamInboundMailResponse(received_messages=messages)
                    finally:
                        for pending in parsing:
                            pending.cancel()
                    continue
                # Sleep until a commit or an ack wakes us, the client leaves, or it is
                # time to look for leases that expired elsewhere.
                waiter = asyncio.ensure_future(wake.wait())
                try:
                    await asyncio.wait({waiter, reader}, timeout=self.queue.settings.sweep_interval,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
            if not reader.cancelled() and reader.exception():
                raise reader.exception()  # type: ignore[misc]  # e.g. a bad request on the stream
        finally:
            await stream.leave()

    async def _read(self, first: pb.StreamInboundMailRequest, requests: AsyncIterator[pb.StreamInboundMailRequest],
                    held: dict[str, str], wake: asyncio.Event) -> None:
        request = first
        while True:
            if request.ack_ids:
                await self.queue.ack(list(request.ack_ids))
                for ack_id in request.ack_ids:
                    pair = split_ack_id(ack_id)
                    if pair and held.get(pair[0]) == pair[1]:
                        del held[pair[0]]
            if request.modify_deadline_ack_ids:
                if len(request.modify_deadline_ack_ids) != len(request.modify_deadline_seconds):
                    raise InvalidArgument([Violation("modify_deadline_seconds",
                                                     "give one deadline per modify_deadline_ack_ids entry")])
                await self.queue.extend(list(request.modify_deadline_ack_ids), list(request.modify_deadline_seconds))
                for ack_id, seconds in zip(request.modify_deadline_ack_ids, request.modify_deadline_seconds):
                    pair = split_ack_id(ack_id)
                    if seconds <= 0 and pair and held.get(pair[0]) == pair[1]:
                        del held[pair[0]]
            wake.set()  # room for more, or messages given back
            request = await anext(requests, None)
            if request is None:
                return

    def _subscription(self, r: pb.StreamInboundMailRequest) -> Subscription:
        providers = [provider_id(p, "providers") for p in r.providers]
        if bool(r.campaign) == bool(providers):
            raise InvalidArgument([Violation("campaign", "subscribe to a campaign or to providers (not both)")])
        if not 0 <= r.max_in_flight <= MAX_IN_FLIGHT:
            raise InvalidArgument([Violation("max_in_flight", f"must be between 1 and {MAX_IN_FLIGHT}")])
        if r.ack_deadline_seconds and not 10 <= r.ack_deadline_seconds <= 600:
            raise InvalidArgument([Violation("ack_deadline_seconds", "must be between 10 and 600")])
        s = self.queue.settings
        return Subscription(campaign=r.campaign or None, provider_ids=providers,
                            consumer=r.consumer or "anonymous", max_in_flight=r.max_in_flight or s.default_in_flight,
                            deadline=r.ack_deadline_seconds or s.default_deadline)

    async def AckInboundMail(self, request: pb.AckInboundMailRequest, context):
        await self.queue.ack(list(request.ack_ids))
        return empty_pb2.Empty()

    async def GetInboundMessage(self, request: pb.GetInboundMessageRequest, context):
        message, body = await self.queue.get(conv.inbound_id(request.name),
                                             attachment_data=request.include_attachment_data)
        return await self.queue.run_blocking(lambda: conv.inbound_to_proto(
            message, body, with_raw=request.include_raw, with_attachment_data=request.include_attachment_data))

    async def ListInboundMessages(self, request: pb.ListInboundMessagesRequest, context):
        messages, token = await self.queue.list(request.filter, request.page_token, request.page_size)
        return pb.ListInboundMessagesResponse(inbound_messages=[conv.inbound_to_proto(m) for m in messages],
                                              next_page_token=token)

    async def RequeueInboundMessage(self, request: pb.RequeueInboundMessageRequest, context):
        return conv.inbound_to_proto(await self.queue.requeue(conv.inbound_id(request.name)))


class _Stream:
    """One consumer's stream, so that leaving happens exactly once."""

    def __init__(self, queue: InboundQueue, sub: Subscription, wake: asyncio.Event, held: dict[str, str],
                 reader: asyncio.Task):
        self.queue, self.sub, self.wake, self.held, self.reader = queue, sub, wake, held, reader
        self.left = False

    async def leave(self) -> None:
        """Whatever this consumer did not acknowledge goes back to the queue now
        (from the stream's end or from the call's, whichever comes first)."""
        if self.left:
            return
        self.left = True
        self.reader.cancel()
        self.queue.unsubscribe(self.sub, self.wake)
        leases = list(self.held.items())
        self.held.clear()
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
