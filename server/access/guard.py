"""Who may call: the bearer token (or the client certificate) names the caller, the
permission table says whether it may call the method. The caller is then
`scope.current()` for the handler, which checks scope (scope.py) against the
resources it touches. Denied calls, changes and streams leave an audit record.
server/calls.py puts this in front of every handler, built once per method."""
from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

import grpc

from ..errors import MailgateError, Unauthenticated, denied
from . import audit, scope
from .permissions import CREDENTIAL_SERVICES, OPEN_SERVICES, RPC_PERMISSIONS, service_of
from .tls import Clients
from .tokens import Principal, Tokens


class Guard:
    def __init__(self, tokens: Tokens, clients: Clients):
        self._tokens, self._clients = tokens, clients

    def method(self, method: str) -> _Method | None:
        """What admits the calls to `method`; None when anyone may call it (health)."""
        service = service_of(method)
        if service in OPEN_SERVICES:
            return None
        permission = RPC_PERMISSIONS.get(method)
        if permission is None and service not in CREDENTIAL_SERVICES:
            permission = ""  # not in the table: nobody may call it
        return _Method(self._tokens, self._clients, method, permission)


class _Method:
    """One method's admission and audit, shared by the calls to it."""

    def __init__(self, tokens: Tokens, clients: Clients, method: str, permission: str | None):
        self.tokens, self.clients, self.method, self.permission = tokens, clients, method, permission
        self.audited = audit.audited(method, permission)

    async def identify(self, context: grpc.aio.ServicerContext) -> Principal:
        """The bearer token's principal, else the client certificate's."""
        secret = _bearer(context.invocation_metadata() or ())
        if secret:
            return await self.tokens.authenticate(secret)
        if self.clients:
            principal = self.clients.identify(context.auth_context())
            if principal is not None:
                return principal
        raise Unauthenticated("no credentials: send `authorization: Bearer <token>` metadata (the server "
                              "writes an administrator token to its token file on first start)"
                              + (", or a client certificate the server knows" if self.clients else ""))

    async def admit(self, request: Any, context: grpc.aio.ServicerContext) -> Principal:
        principal = None
        try:
            principal = await self.identify(context)
            if self.permission is not None and (not self.permission or not principal.may(self.permission)):
                raise denied(self.permission or self.method)
        except MailgateError as e:
            audit.record(principal, context.peer(), self.method, audit.resource(request), e.reason,
                         permission=self.permission or "")
            raise
        scope.enter(principal, self.permission or "")
        return principal

    def unary(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            principal = await self.admit(request, context)
            if not self.audited:
                return await fn(request, context)
            try:
                response = await fn(request, context)
            except BaseException as e:
                audit.record(principal, context.peer(), self.method, audit.resource(request), audit.outcome(e))
                raise
            audit.record(principal, context.peer(), self.method, audit.resource(request, response), "OK")
            return response
        return wrapper

    def streaming(self, fn: Callable[..., Any], client_streaming: bool) -> Callable[..., Any]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            principal = await self.admit(None, context)
            if not self.audited:
                async for item in fn(request, context):
                    yield item
                return
            first: list[Any] = []

            def opened(r: Any) -> None:
                first.append(r)
                audit.record(principal, context.peer(), self.method, audit.resource(r), "OK", event="opened")
            if client_streaming:
                request = _first_seen(request, opened)
            else:
                opened(request)
            try:
                async for item in fn(request, context):
                    yield item
            except BaseException as e:
                audit.record(principal, context.peer(), self.method, audit.resource(first[0] if first else None),
                             audit.outcome(e), event="closed")
                raise
            audit.record(principal, context.peer(), self.method, audit.resource(first[0] if first else None),
                         "OK", event="closed")
        return wrapper


async def _first_seen(requests: AsyncIterator[Any], seen: Callable[[Any], None]) -> AsyncIterator[Any]:
    first = True
    async for r in requests:
        if first:
            seen(r)
            first = False
        yield r


def _bearer(metadata: Any) -> str:
    """The bearer secret in the metadata; empty if there is no authorization."""
    values = [v for k, v in metadata if k == "authorization"]
    if not values:
        return ""
    scheme, _, token = str(values[-1]).partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the authorization metadata must be `Bearer <token>`")
    return token.strip()
