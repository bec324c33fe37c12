"""Domain errors -> gRPC status with google.rpc details (AIP-193), in one place.

Every error carries an ErrorInfo; bad fields add BadRequest; failed checks add
the ValidationReport (and RetryInfo when backing off). Anything unexpected
becomes INTERNAL with a fixed message: str(err) could carry a secret.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any, Awaitable, Callable

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from .providers import converters
from .errors import (Aborted, AlreadyExists, ChecksFailed, FailedPrecondition, InvalidArgument,
                     MailgateError, NotFound, PermissionDenied, Unauthenticated)

log = logging.getLogger("mailgate.rpc")

DOMAIN = "mailgate.dev"

_CODES: list[tuple[type[MailgateError], int]] = [
    (InvalidArgument, code_pb2.INVALID_ARGUMENT),
    (NotFound, code_pb2.NOT_FOUND),
    (AlreadyExists, code_pb2.ALREADY_EXISTS),
    (Aborted, code_pb2.ABORTED),
    (FailedPrecondition, code_pb2.FAILED_PRECONDITION),
    (Unauthenticated, code_pb2.UNAUTHENTICATED),
    (PermissionDenied, code_pb2.PERMISSION_DENIED),
]


def to_status(err: MailgateError) -> status_pb2.Status:
    code = next((c for kind, c in _CODES if isinstance(err, kind)), code_pb2.INTERNAL)
    details = [error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=err.metadata)]
    if isinstance(err, InvalidArgument):
        details.append(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in err.violations]))
    if isinstance(err, ChecksFailed):
        details.append(converters.report_to_proto(err.report))
        if err.retry_after:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(err.retry_after * 1e9))
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    return status_pb2.Status(code=code, message=err.message, details=packed)


def internal(method: str) -> status_pb2.Status:
    ref = uuid.uuid4().hex[:12]
    log.exception("%s failed unexpectedly (ref %s)", method, ref)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN, metadata={"ref": ref}))
    return status_pb2.Status(code=code_pb2.INTERNAL,
                             message=f"internal error; the server log has the details under ref {ref}",
                             details=[info])


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler so a domain error reaches the caller as a rich status."""

    async def intercept_service(self, continuation: Callable[..., Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        if handler.unary_unary:
            return handler._replace(unary_unary=_unary(handler.unary_unary, method))
        if handler.unary_stream:
            return handler._replace(unary_stream=_streaming(handler.unary_stream, method))
        if handler.stream_stream:
            return handler._replace(stream_stream=_streaming(handler.stream_stream, method))
        if handler.stream_unary:
            return handler._replace(stream_unary=_unary(handler.stream_unary, method))
        return handler


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    status = to_status(exc) if isinstance(exc, MailgateError) else internal(method)
    await context.abort_with_status(rpc_status.to_status(status))


def _unary(fn: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(request, context)
        except (grpc.aio.AbortError, KeyboardInterrupt):
            raise
        except Exception as exc:
            await _abort(context, exc, method)
    return wrapper


def _streaming(fn: Callable[..., Any], method: str) -> Callable[..., Any]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async for item in fn(request, context):
                yield item
        except (grpc.aio.AbortError, KeyboardInterrupt):
            raise
        except Exception as exc:
            await _abort(context, exc, method)
    return wrapper
