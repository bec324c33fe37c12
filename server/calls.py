"""The one interceptor every call passes. It is refused when too many calls are under
way; its request is refused before it is parsed when it is over its method's size or
its bytes do not parse; its caller is admitted
(access/guard.py, when authentication is on); its domain errors reach the caller as
rich statuses (rpc_errors.py). What wraps a method's handler is built on its first
call and kept: a call pays for running the wrappers, not for making them."""
from __future__ import annotations

from typing import Any, Awaitable, Callable

import grpc

from . import rpc_errors
from .access.guard import Guard
from .access.permissions import OPEN_SERVICES, service_of
from .errors import ResourceExhausted

Wrapper = Callable[[Callable[..., Any], bool], Callable[..., Any]]


class CallInterceptor(grpc.aio.ServerInterceptor):
    """`max_calls` calls may be under way at once (open streams count; health checks are
    not counted, so a probe still answers), `max_bytes` bounds every request,
    `large[method]` the methods that take more; `guard` admits callers (None:
    authentication is off)."""

    def __init__(self, max_calls: int, max_bytes: int, large: dict[str, int], guard: Guard | None):
        self._max_calls, self._max_bytes, self._large, self._guard = max_calls, max_bytes, dict(large), guard
        self.under_way = 0
        # method -> (the handler gRPC resolved, its wrapped form); bounded by the methods served
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(self, continuation: Callable[..., Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        known = self._wrapped.get(details.method)
        if known is None or known[0] is not handler:
            known = self._wrapped[details.method] = (handler, self._wrap(details.method, handler))
        return known[1]

    def _wrap(self, method: str, handler: Any) -> Any:
        if handler.request_deserializer is not None:
            handler = handler._replace(request_deserializer=rpc_errors.lenient(
                handler.request_deserializer, self._large.get(method, self._max_bytes)))
        admission = self._guard.method(method) if self._guard else None
        counted = self._max_calls > 0 and service_of(method) not in OPEN_SERVICES

        def unary(fn: Callable[..., Any], streamed: bool) -> Callable[..., Any]:
            fn = admission.unary(fn) if admission else fn
            fn = self._counted_unary(fn) if counted else fn
            return rpc_errors.answer_unary(rpc_errors.parsed_stream(fn) if streamed else fn, method)

        def streaming(fn: Callable[..., Any], streamed: bool) -> Callable[..., Any]:
            fn = admission.streaming(fn, streamed) if admission else fn
            fn = self._counted_streaming(fn) if counted else fn
            return rpc_errors.answer_streaming(rpc_errors.parsed_stream(fn) if streamed else fn, method)
        return wrap(handler, unary, streaming)

    def _enter(self) -> None:
        if self.under_way >= self._max_calls:
            raise ResourceExhausted(f"the server has {self._max_calls:,} calls under way, its limit: try again "
                                    "shortly", retry_after=1.0, metadata={"limit": "concurrent_calls"})
        self.under_way += 1

    def _counted_unary(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def counted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self._enter()
            try:
                return await fn(request, context)
            finally:
                self.under_way -= 1
        return counted

    def _counted_streaming(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def counted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self._enter()
            try:
                async for item in fn(request, context):
                    yield item
            finally:
                self.under_way -= 1
        return counted


def wrap(handler: Any, unary: Wrapper, streaming: Wrapper) -> Any:
    """`handler` (grpc.RpcMethodHandler) with its behaviour wrapped, whatever its kind:
    `unary(fn, requests_streamed)` for a method that answers once, `streaming(fn,
    requests_streamed)` for one that answers with a stream."""
    for kind, wrapper, streamed in (("unary_unary", unary, False), ("stream_unary", unary, True),
                                    ("unary_stream", streaming, False), ("stream_stream", streaming, True)):
        fn = getattr(handler, kind)
        if fn:
            return handler._replace(**{kind: wrapper(fn, streamed)})
    return handler
