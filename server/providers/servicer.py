"""ProviderService over gRPC: translate the request, call the domain, translate back."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import grpc
from google.protobuf import empty_pb2

from mailgate.drivers.registry import DriverRegistry
from mailgate.v1 import provider_pb2, provider_service_pb2 as pb, provider_service_pb2_grpc

from . import converters as conv
from ..converters import provider_id, timestamp
from .. import paging
from ..errors import InvalidArgument, Violation
from ..access import scope
from .lifecycle import Providers
from .state import StoredProvider


def _place(p: StoredProvider) -> tuple[str, str]:
    return p.config.id or "", p.config.campaign


@contextmanager
def request_paths(type_: str, drivers: DriverRegistry) -> Iterator[None]:
    """Names violations by the request's field paths (`provider.smtp_imap.smtp.port`)."""
    try:
        yield
    except InvalidArgument as e:
        e.violations = [Violation(conv.violation_path(v.field, type_, drivers), v.description)
                        for v in e.violations]
        raise


class ProviderServicer(provider_service_pb2_grpc.ProviderServiceServicer):
    def __init__(self, providers: Providers, drivers: DriverRegistry):
        self.providers, self.drivers = providers, drivers

    def _provider_out(self, stored, notices=()) -> provider_pb2.Provider:
        return conv.to_proto(stored, self.drivers, notices)

    async def _visible(self, pid: str) -> StoredProvider:
        return await scope.visible(self.providers.get(pid), _place)

    async def _in_scope(self, pid: str) -> str:
        return await scope.in_sight(pid, self.providers.get, _place)

    async def CreateProvider(self, request: pb.CreateProviderRequest, context: grpc.aio.ServicerContext):
        config = conv.to_config(request.provider, self.drivers)
        scope.check_new(config.campaign)
        with request_paths(config.type, self.drivers):
            stored, notices = await self.providers.create(config, request.validate_only)
        return self._provider_out(stored, notices)

    async def GetProvider(self, request: pb.GetProviderRequest, context):
        return self._provider_out(await self._visible(provider_id(request.name)))

    async def ListProviders(self, request: pb.ListProvidersRequest, context):
        page = await self.providers.list(request.filter, request.page_token, request.page_size,
                                         within=scope.current())
        providers, token = page.shown(self._provider_out)
        return pb.ListProvidersResponse(providers=providers, next_page_token=token)

    async def UpdateProvider(self, request: pb.UpdateProviderRequest, context):
        pid = provider_id(request.provider.name)
        current = await self._visible(pid)
        type_ = current.config.type
        with request_paths(type_, self.drivers):
            patch = conv.to_config(request.provider, self.drivers, stored_type=type_)
            paths = conv.mask_paths(request.provider, request.update_mask.paths, type_, self.drivers)
            if "campaign" in paths:
                scope.check(pid, patch.campaign)  # a scoped caller cannot move a provider out of its sight
            stored, notices = await self.providers.update(
                pid, patch, paths, etag=request.provider.etag, validate_only=request.validate_only)
        return self._provider_out(stored, notices)

    async def DeleteProvider(self, request: pb.DeleteProviderRequest, context):
        await self.providers.delete(await self._in_scope(provider_id(request.name)), request.etag)
        return empty_pb2.Empty()

    async def ValidateProvider(self, request: pb.ValidateProviderRequest, context):
        which = request.WhichOneof("target")
        if which == "name":
            report, notices = await self.providers.validate(await self._in_scope(provider_id(request.name)))
            type_ = ""
        elif which == "provider":
            config = conv.to_config(request.provider, self.drivers)
            scope.check_new(config.campaign)
            type_ = config.type
            with request_paths(type_, self.drivers):
                report, notices = await self.providers.validate(config)
        else:
            raise InvalidArgument([Violation("target", "give a provider name or a candidate provider")])
        return pb.ValidateProviderResponse(report=conv.report_to_proto(report),
                                           notices=conv.notices_to_proto(notices, type_, self.drivers))

    async def ActivateProvider(self, request: pb.ActivateProviderRequest, context):
        stored, report, pending = await self.providers.activate(await self._in_scope(provider_id(request.name)))
        resp = pb.ActivateProviderResponse(provider=self._provider_out(stored),
                                           report=conv.report_to_proto(report))
        if pending:
            resp.authorization.CopyFrom(pb.AuthorizationRequest(
                authorization_uri=pending.uri, state=pending.state, expire_time=timestamp(pending.expire_time)))
        return resp

    async def CompleteAuthorization(self, request: pb.CompleteAuthorizationRequest, context):
        state, response = conv.authorization_response(request)
        stored, report = await self.providers.complete_authorization(
            state, response, allowed=lambda p: scope.check(*_place(p)))
        return pb.CompleteAuthorizationResponse(provider=self._provider_out(stored),
                                                report=conv.report_to_proto(report))

    async def ListProviderEvents(self, request: pb.ListProviderEventsRequest, context):
        pid = await self._in_scope(provider_id(request.parent, field="parent"))
        page = await self.providers.list_events(pid, request.filter, request.page_token, request.page_size)
        events, token = page.shown(conv.event_to_proto)
        return pb.ListProviderEventsResponse(provider_events=events, next_page_token=token)

    async def ListDrivers(self, request: pb.ListDriversRequest, context):
        size = paging.page_size(request.page_size, maximum=100, default=100)
        types = self.drivers.types()
        start = 0
        if request.page_token:
            if request.page_token not in types:
                raise InvalidArgument([Violation("page_token", "not a page token from this service")])
            start = types.index(request.page_token)
        page = types[start:start + size]
        nxt = types[start + size] if start + size < len(types) else ""
        return pb.ListDriversResponse(
            drivers=[conv.driver_to_proto(self.drivers.get(t), self.drivers.source(t)) for t in page],
            next_page_token=nxt)
