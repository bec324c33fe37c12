"""Every call passes here before its handler runs: the bearer token names the
caller, the permission table says whether it may call this method. The caller
is then `scope.current()` for the handler, which checks scope (scope.py) against
the resources it touches."""
from __future__ import annotations

from typing import Any, Awaitable, Callable

import grpc

from ..errors import Unauthenticated, denied
from .permissions import CREDENTIAL_SERVICES, OPEN_SERVICES, RPC_PERMISSIONS, service_of
from . import scope
from .tokens import Tokens

class AccessInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: Tokens):
        self._tokens = tokens

    async def intercept_service(self, continuation: Callable[..., Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        service = service_of(method)
        if service in OPEN_SERVICES:
            return handler
        permission = RPC_PERMISSIONS.get(method)
        if permission is None and service not in CREDENTIAL_SERVICES:
            permission = ""  # not in the table: nobody may call it
        metadata = details.invocation_metadata or ()

        async def admit() -> None:
            principal = await self._tokens.authenticate(_bearer(metadata))
            if permission is not None and (not permission or not principal.may(permission)):
                raise denied(permission or method)
            scope.enter(principal, permission or "")

        if handler.unary_unary:
            return handler._replace(unary_unary=_unary(handler.unary_unary, admit))
        if handler.stream_unary:
            return handler._replace(stream_unary=_unary(handler.stream_unary, admit))
        if handler.unary_stream:
            return handler._replace(unary_stream=_streaming(handler.unary_stream, admit))
        if handler.stream_stream:
            return handler._replace(stream_stream=_streaming(handler.stream_stream, admit))
        return handler


def _bearer(metadata: Any) -> str:
    values = [v for k, v in metadata if k == "authorization"]
    if not values:
        raise Unauthenticated("no credentials: send `authorization: Bearer <token>` metadata "
                              "(the server writes an administrator token to its token file on first start)")
    scheme, _, token = str(values[-1]).partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the authorization metadata must be `Bearer <token>`")
    return token.strip()


def _unary(fn: Callable[..., Awaitable[Any]], admit: Callable[[], Awaitable[None]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await admit()
        return await fn(request, context)
    return wrapper


def _streaming(fn: Callable[..., Any], admit: Callable[[], Awaitable[None]]) -> Callable[..., Any]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await admit()
        async for item in fn(request, context):
            yield item
    return wrapper

