"""MailgateClient: the generated ProviderService, MailService, InboundService and
TokenService stubs with Python manners. It presents an API token (see
credentials.find_token).

Every method returns proto messages (mailgate.v1) and raises MailgateError for any
failed call. Wherever a provider is referred to, `ref` may be the resource name
(`providers/{id}`), the bare id, or the display name an administrator knows it by.
"""
from __future__ import annotations

import queue
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, TypeVar

import grpc
from google.protobuf import field_mask_pb2

from mailgate.v1 import (driver_pb2, inbound_service_pb2, inbound_service_pb2_grpc, mail_service_pb2,
                         mail_service_pb2_grpc, provider_event_pb2, provider_pb2)
from mailgate.v1 import provider_service_pb2 as pb
from mailgate.v1 import provider_service_pb2_grpc, token_service_pb2, token_service_pb2_grpc

from .credentials import find_token, tls_from_environment, with_token
from .errors import MailgateError, from_rpc_error

Provider = provider_pb2.Provider
Response = TypeVar("Response")

PREFIX = "providers/"


class MailgateClient:
    def __init__(self, target: str = "127.0.0.1:50051", *, channel: grpc.Channel | None = None,
                 timeout: float = 30.0, token: str | None = None, tls: grpc.ChannelCredentials | None = None):
        """`token`: the API token to present; None looks for one (credentials.find_token).
        `tls`: the channel's TLS; None takes it from the environment (credentials.tls_from_environment)."""
        # A channel passed in belongs to the caller (it may carry TLS or interceptors); close only ours.
        self._owns_channel = channel is None
        if channel is None:
            # No receive limit: GetInboundMessage with raw bytes and attachments passes 4 MB.
            options = [("grpc.max_receive_message_length", -1)]
            tls = tls or tls_from_environment()
            channel = (grpc.secure_channel(target, tls, options=options) if tls
                       else grpc.insecure_channel(target, options=options))
            token = find_token() if token is None else token
        self.channel = with_token(channel, token) if token else channel
        self.target = target
        self.timeout = timeout
        self.stub = provider_service_pb2_grpc.ProviderServiceStub(self.channel)
        self.mail = mail_service_pb2_grpc.MailServiceStub(self.channel)
        self.inbound = inbound_service_pb2_grpc.InboundServiceStub(self.channel)
        self.tokens = token_service_pb2_grpc.TokenServiceStub(self.channel)

    def close(self) -> None:
        if self._owns_channel:
            self.channel.close()

    def __enter__(self) -> "MailgateClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ providers
    def create_provider(self, provider: Provider, *, validate_only: bool = False) -> Provider:
        return self._call(self.stub.CreateProvider,
                          pb.CreateProviderRequest(provider=provider, validate_only=validate_only))

    def get_provider(self, ref: str) -> Provider:
        return self._call(self.stub.GetProvider, pb.GetProviderRequest(name=self.resolve(ref)))

    def list_providers(self, filter: str = "", page_size: int = 0) -> Iterator[Provider]:
        """Every provider matching `filter`, fetched `page_size` at a time (0: server default)."""
        return self._pages(self.stub.ListProviders, "providers", pb.ListProvidersRequest(
            filter=filter, page_size=page_size))

    def update_provider(self, provider: Provider, paths: list[str] | None = None, *,
                        validate_only: bool = False) -> Provider:
        """Changes the fields named in `paths` (e.g. `smtp_imap.smtp.port`); None: every
        field set in `provider`. `provider.name` may be any ref."""
        provider = _copy(provider)
        provider.name = self.resolve(provider.name)
        return self._call(self.stub.UpdateProvider, pb.UpdateProviderRequest(
            provider=provider, update_mask=field_mask_pb2.FieldMask(paths=paths or []),
            validate_only=validate_only))

    def delete_provider(self, ref: str, etag: str = "") -> None:
        self._call(self.stub.DeleteProvider, pb.DeleteProviderRequest(name=self.resolve(ref), etag=etag))

    def validate_provider(self, ref_or_provider: str | Provider) -> pb.ValidateProviderResponse:
        """Checks a stored provider (a ref) or an unsaved candidate (a Provider). Failed
        checks are in the response's report, not raised."""
        if isinstance(ref_or_provider, Provider):
            request = pb.ValidateProviderRequest(provider=ref_or_provider)
        else:
            request = pb.ValidateProviderRequest(name=self.resolve(ref_or_provider))
        return self._call(self.stub.ValidateProvider, request)

    def activate_provider(self, ref: str) -> pb.ActivateProviderResponse:
        return self._call(self.stub.ActivateProvider, pb.ActivateProviderRequest(name=self.resolve(ref)))

    def complete_authorization(self, authorization_response: str = "", *, state: str = "", code: str = ""
                               ) -> pb.CompleteAuthorizationResponse:
        """Finishes an OAuth sign-in: the whole redirect URL, or its state and code."""
        return self._call(self.stub.CompleteAuthorization, pb.CompleteAuthorizationRequest(
            authorization_response=authorization_response, state=state, code=code))

    def list_provider_events(self, ref: str, filter: str = "", page_size: int = 0
                             ) -> Iterator[provider_event_pb2.ProviderEvent]:
        """The provider's history, newest first; `filter` e.g. `type = TYPE_STATE_CHANGED`."""
        return self._pages(self.stub.ListProviderEvents, "provider_events", pb.ListProviderEventsRequest(
            parent=self.resolve(ref), filter=filter, page_size=page_size))

    def list_drivers(self) -> list[driver_pb2.Driver]:
        return list(self._pages(self.stub.ListDrivers, "drivers", pb.ListDriversRequest()))

    # ------------------------------------------------------------ mail
    def send_email(self, provider_ref: str, **fields: Any) -> mail_service_pb2.OutboundMessage:
        """`fields` are SendEmailRequest's: to, cc, bcc, subject, text_body, html_body,
        attachments, reply_to_message_id or reply_to_outbound_message, request_id.
        Pass a request_id to retry safely after a timeout."""
        return self._call(self.mail.SendEmail, mail_service_pb2.SendEmailRequest(
            provider=self.resolve(provider_ref), **fields))

    def get_outbound_message(self, name: str) -> mail_service_pb2.OutboundMessage:
        """`name`: `outboundMessages/{id}` or the bare id."""
        return self._call(self.mail.GetOutboundMessage, mail_service_pb2.GetOutboundMessageRequest(
            name=_named(name, "outboundMessages/")))

    def list_outbound_messages(self, filter: str = "", page_size: int = 0
                               ) -> Iterator[mail_service_pb2.OutboundMessage]:
        return self._pages(self.mail.ListOutboundMessages, "outbound_messages",
                           mail_service_pb2.ListOutboundMessagesRequest(filter=filter, page_size=page_size))

    # ------------------------------------------------------------ inbound
    def stream_inbound_mail(self, campaign: str = "", *, providers: Iterable[str] = (), consumer: str = "",
                            max_in_flight: int = 0, ack_deadline_seconds: int = 0,
                            include_raw: bool = False) -> "InboundStream":
        """A StreamInboundMail subscription to a campaign (or providers): iterate it
        for deliveries; acknowledge them with `ack` (on the stream) or `ack_inbound_mail`."""
        return InboundStream(self.inbound, inbound_service_pb2.StreamInboundMailRequest(
            campaign=campaign, providers=[self.resolve(p) for p in providers], consumer=consumer,
            max_in_flight=max_in_flight, ack_deadline_seconds=ack_deadline_seconds, include_raw=include_raw))

    def ack_inbound_mail(self, ack_ids: Iterable[str]) -> None:
        """Acknowledges deliveries; committed when it returns."""
        self._call(self.inbound.AckInboundMail, inbound_service_pb2.AckInboundMailRequest(ack_ids=list(ack_ids)))

    def get_inbound_message(self, name: str, *, include_raw: bool = False, include_attachment_data: bool = False
                            ) -> inbound_service_pb2.InboundMessage:
        """`name`: `inboundMessages/{id}` or the bare id."""
        return self._call(self.inbound.GetInboundMessage, inbound_service_pb2.GetInboundMessageRequest(
            name=_named(name, "inboundMessages/"), include_raw=include_raw,
            include_attachment_data=include_attachment_data))

    def list_inbound_messages(self, filter: str = "", page_size: int = 0
                              ) -> Iterator[inbound_service_pb2.InboundMessage]:
        """Newest first; `filter` on provider, campaign, state, conversation_id."""
        return self._pages(self.inbound.ListInboundMessages, "inbound_messages",
                           inbound_service_pb2.ListInboundMessagesRequest(filter=filter, page_size=page_size))

    def requeue_inbound_message(self, name: str) -> inbound_service_pb2.InboundMessage:
        """Puts a dead-lettered message back in its queue."""
        return self._call(self.inbound.RequeueInboundMessage, inbound_service_pb2.RequeueInboundMessageRequest(
            name=_named(name, "inboundMessages/")))

    # ------------------------------------------------------------ tokens
    def create_token(self, display_name: str, permissions: list[str], *, campaigns: list[str] = (),
                     providers: list[str] = (), expire_time: datetime | None = None
                     ) -> token_service_pb2.CreateTokenResponse:
        """A new API token; its secret is in the response and nowhere else, ever."""
        token = token_service_pb2.Token(display_name=display_name, permissions=permissions,
                                        campaigns=list(campaigns), providers=[self.resolve(p) for p in providers])
        if expire_time is not None:
            token.expire_time.FromDatetime(expire_time)
        return self._call(self.tokens.CreateToken, token_service_pb2.CreateTokenRequest(token=token))

    def list_tokens(self) -> Iterator[token_service_pb2.Token]:
        return self._pages(self.tokens.ListTokens, "tokens", token_service_pb2.ListTokensRequest())

    def revoke_token(self, name: str) -> None:
        """`name`: `tokens/{id}` or the bare id."""
        self._call(self.tokens.DeleteToken, token_service_pb2.DeleteTokenRequest(name=_named(name, "tokens/")))

    # ------------------------------------------------------------ helpers
    def _pages(self, method: Callable[..., Any], field: str, request: Any) -> Iterator[Any]:
        """Follows next_page_token (AIP-158), yielding the items of every page."""
        while True:
            page = self._call(method, request)
            yield from getattr(page, field)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def resolve(self, ref: str) -> str:
        """`providers/{id}`, a bare id or a display name -> `providers/{id}`.

        Anything with a slash is taken as a resource name and left to the server to
        judge. Otherwise one listing decides: an exact id, or a display name compared
        the way the server compares them (case-insensitively, ignoring outer blanks).
        """
        if "/" in ref:
            return ref
        wanted = ref.strip().casefold()
        if not wanted:
            raise MailgateError(grpc.StatusCode.INVALID_ARGUMENT, "no provider given",
                                reason="INVALID_ARGUMENT", violations={"name": "must not be empty"})
        matches = {p.name: p for p in self.list_providers(page_size=1000)
                   if p.name == PREFIX + ref or p.display_name.strip().casefold() == wanted}
        if len(matches) == 1:
            return next(iter(matches))
        if not matches:
            raise MailgateError(grpc.StatusCode.NOT_FOUND,
                                f"no provider has the id or the name {ref!r}",
                                reason="NOT_FOUND", metadata={"ref": ref})
        which = ", ".join(f"{name} ({p.display_name!r})" for name, p in matches.items())
        raise MailgateError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"{ref!r} matches several providers: {which}; use the resource name",
                            reason="AMBIGUOUS_REF", metadata={"ref": ref})

    def _call(self, method: Callable[..., Response], request: Any) -> Response:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err


class InboundStream:
    """One StreamInboundMail call: iterate for ReceivedInboundMessages (MailgateError
    when the stream fails); `ack` and `extend` travel back on the same stream."""

    def __init__(self, stub: inbound_service_pb2_grpc.InboundServiceStub,
                 subscription: inbound_service_pb2.StreamInboundMailRequest):
        self._requests: queue.Queue[inbound_service_pb2.StreamInboundMailRequest | None] = queue.Queue()
        self._requests.put(subscription)
        self._call = stub.StreamInboundMail(iter(self._requests.get, None))

    def __iter__(self) -> Iterator[inbound_service_pb2.ReceivedInboundMessage]:
        try:
            for response in self._call:
                yield from response.received_messages
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:  # closed by us
                raise from_rpc_error(err) from err

    def ack(self, ack_ids: Iterable[str]) -> None:
        """Acknowledges deliveries on the stream (committed soon after, not when this returns)."""
        self._requests.put(inbound_service_pb2.StreamInboundMailRequest(ack_ids=list(ack_ids)))

    def extend(self, ack_ids: Iterable[str], seconds: int) -> None:
        """Sets the deadline of deliveries to `seconds` from now (0: gives them back)."""
        ids = list(ack_ids)
        self._requests.put(inbound_service_pb2.StreamInboundMailRequest(
            modify_deadline_ack_ids=ids, modify_deadline_seconds=[seconds] * len(ids)))

    def close(self) -> None:
        """Ends the stream; what is not acknowledged goes back to the queue untried."""
        self._requests.put(None)
        self._call.cancel()

    def __enter__(self) -> "InboundStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _named(name: str, prefix: str) -> str:
    """A resource name from a name or a bare id."""
    return name if "/" in name else prefix + name


def _copy(provider: Provider) -> Provider:
    out = Provider()
    out.CopyFrom(provider)
    return out
