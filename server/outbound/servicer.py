"""MailService over gRPC: translate the request, call the outbox, translate back."""
from __future__ import annotations

from mailgate.v1 import mail_service_pb2 as pb, mail_service_pb2_grpc

from . import converters as conv
from ..access import scope
from ..converters import provider_id
from ..providers.lifecycle import Providers
from .outbox import Outbox


class MailServicer(mail_service_pb2_grpc.MailServiceServicer):
    def __init__(self, outbox: Outbox, providers: Providers):
        self.outbox, self.providers = outbox, providers

    async def _check_provider(self, pid: str) -> None:
        """A scoped caller sends and reads only through providers it sees."""
        principal = scope.current()
        if principal.campaigns:  # the provider's campaign decides: read it
            await scope.visible(self.providers.get(pid), lambda p: (pid, p.config.campaign))
        elif principal.providers:
            scope.check(pid, "")

    async def SendEmail(self, request: pb.SendEmailRequest, context):
        pid = provider_id(request.provider, "provider")
        await self._check_provider(pid)
        sent = await self.outbox.send(
            pid, conv.draft_from_proto(request),
            reply_to_message_id=request.reply_to_message_id,
            reply_to_outbound=(conv.outbound_id(request.reply_to_outbound_message)
                               if request.reply_to_outbound_message else ""),
            request_id=request.request_id)
        return conv.outbound_to_proto(sent)

    async def GetOutboundMessage(self, request: pb.GetOutboundMessageRequest, context):
        message = await scope.found(self.outbox.get(conv.outbound_id(request.name)))
        await self._check_provider(message.provider_id)  # the provider's campaign is the message's
        return conv.outbound_to_proto(message)

    async def ListOutboundMessages(self, request: pb.ListOutboundMessagesRequest, context):
        page = await self.outbox.list(request.filter, request.page_token, request.page_size,
                                      within=scope.current())
        messages, token = page.shown(conv.outbound_to_proto)
        return pb.ListOutboundMessagesResponse(outbound_messages=messages, next_page_token=token)
