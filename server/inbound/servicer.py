"""InboundService over gRPC: requests to calls on the inbound domain, its answers to
protos, nothing else."""
from __future__ import annotations

import asyncio
import functools
from contextlib import aclosing
from typing import AsyncIterator

import grpc
from google.protobuf import empty_pb2

from mailgate.v1 import inbound_service_pb2 as pb, inbound_service_pb2_grpc

from . import converters as conv
from ..access import scope
from ..access.permissions import INBOUND_READ
from ..providers.lifecycle import Providers
from .messages import InboundMessage
from .queue import InboundQueue, Subscription
from .stream import Stream


def _place(m: InboundMessage) -> tuple[str, str]:
    return m.provider_id, m.campaign


class InboundServicer(inbound_service_pb2_grpc.InboundServiceServicer):
    def __init__(self, queue: InboundQueue, providers: Providers):
        self.queue, self.providers = queue, providers

    async def _check_subscription(self, sub: Subscription) -> None:
        """A scoped consumer subscribes only to what it sees: a campaign-wide
        subscription would show a provider-scoped one other providers' mail."""
        principal = scope.current()
        if sub.include_raw:
            scope.require(INBOUND_READ)
        if not principal.scoped:
            return
        if sub.campaign is not None:
            if principal.providers or sub.campaign not in principal.campaigns:
                raise scope.refuse()
            return
        for pid in sub.provider_ids:
            await scope.visible(self.providers.get(pid), lambda p: (pid, p.config.campaign))

    async def _in_scope(self, message_id: str) -> str:
        return await scope.in_sight(message_id, self.queue.head, _place)

    async def StreamInboundMail(self, requests: AsyncIterator[pb.StreamInboundMailRequest],
                                context: grpc.aio.ServicerContext):
        first = await anext(aiter(requests), None)
        if first is None:
            return
        sub = conv.subscription(first, self.queue.settings)
        await self._check_subscription(sub)
        stream = Stream(self.queue, sub)
        reader = asyncio.get_running_loop().create_task(self._read(first, requests, stream))
        # A consumer that goes away (cancel, lost connection) ends the call at once, while
        # this generator may only be finalized much later: the call's end leaves.
        context.add_done_callback(lambda _: (reader.cancel(), stream.leave_soon()))
        try:
            async with aclosing(stream.batches(until=reader)) as batches:
                async for batch in batches:
                    received = await self.queue.run_blocking(conv.received_to_proto, batch, stream.sub.include_raw)
                    yield pb.StreamInboundMailResponse(received_messages=received)
            if not reader.cancelled() and reader.exception():
                raise reader.exception()  # type: ignore[misc]  # e.g. a bad request on the stream
        finally:
            reader.cancel()
            await stream.leave()

    async def _read(self, request: pb.StreamInboundMailRequest | None,
                    requests: AsyncIterator[pb.StreamInboundMailRequest], stream: Stream) -> None:
        while request is not None:
            conv.check_acks(list(request.ack_ids), list(request.modify_deadline_ack_ids),
                            list(request.modify_deadline_seconds))
            if request.ack_ids:
                await stream.ack(list(request.ack_ids))
            if request.modify_deadline_ack_ids:
                await stream.modify_deadlines(list(request.modify_deadline_ack_ids),
                                              list(request.modify_deadline_seconds))
            request = await anext(requests, None)

    async def AckInboundMail(self, request: pb.AckInboundMailRequest, context):
        conv.check_acks(list(request.ack_ids))
        await self.queue.ack(list(request.ack_ids))
        return empty_pb2.Empty()

    async def GetInboundMessage(self, request: pb.GetInboundMessageRequest, context):
        message, body = await self.queue.get(await self._in_scope(conv.inbound_id(request.name)),
                                             attachment_data=request.include_attachment_data)
        return await self.queue.run_blocking(functools.partial(
            conv.inbound_to_proto, message, body, with_raw=request.include_raw,
            with_attachment_data=request.include_attachment_data))

    async def ListInboundMessages(self, request: pb.ListInboundMessagesRequest, context):
        page = await self.queue.list(request.filter, request.page_token, request.page_size,
                                     within=scope.current())
        messages, token = page.shown(conv.inbound_to_proto)
        return pb.ListInboundMessagesResponse(inbound_messages=messages, next_page_token=token)

    async def RequeueInboundMessage(self, request: pb.RequeueInboundMessageRequest, context):
        return conv.inbound_to_proto(await self.queue.requeue(await self._in_scope(conv.inbound_id(request.name))))
