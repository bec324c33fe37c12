"""MailService over gRPC: translate the request, call the outbox, translate back."""
from __future__ import annotations

from mailgate.v1 import mail_service_pb2 as pb, mail_service_pb2_grpc

from . import converters as conv
from ..converters import provider_id
from .outbox import Outbox


class MailServicer(mail_service_pb2_grpc.MailServiceServicer):
    def __init__(self, outbox: Outbox):
        self.outbox = outbox

    async def SendEmail(self, request: pb.SendEmailRequest, context):
        sent = await self.outbox.send(
            provider_id(request.provider, "provider"), conv.draft_from_proto(request),
            reply_to_message_id=request.reply_to_message_id,
            reply_to_outbound=(conv.outbound_id(request.reply_to_outbound_message)
                               if request.reply_to_outbound_message else ""),
            request_id=request.request_id)
        return conv.outbound_to_proto(sent)

    async def GetOutboundMessage(self, request: pb.GetOutboundMessageRequest, context):
        return conv.outbound_to_proto(await self.outbox.get(conv.outbound_id(request.name)))

    async def ListOutboundMessages(self, request: pb.ListOutboundMessagesRequest, context):
        rows, token = await self.outbox.list(request.filter, request.page_token, request.page_size)
        return pb.ListOutboundMessagesResponse(outbound_messages=[conv.outbound_to_proto(m) for m in rows],
                                               next_page_token=token)
