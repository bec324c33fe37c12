"""Domain errors -> gRPC status with google.rpc details (AIP-193), in one place.

Every error carries an ErrorInfo; bad fields add BadRequest; failed checks add
the ValidationReport (and RetryInfo when backing off). Anything unexpected
becomes INTERNAL with a fixed message: str(err) could carry a secret.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from . import limits
from .providers import converters
from .errors import (Aborted, AlreadyExists, ChecksFailed, FailedPrecondition, InvalidArgument,
                     MailgateError, NotFound, PermissionDenied, ResourceExhausted, Unauthenticated,
                     Violation)

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
    (ResourceExhausted, code_pb2.RESOURCE_EXHAUSTED),
]


def to_status(err: MailgateError) -> status_pb2.Status:
    """The error as a status that always reaches the client: gRPC carries it in trailers,
    which clients refuse past 8-16 KB, so its words, metadata and violations are cut to
    the sizes in server/limits.py."""
    code = next((c for kind, c in _CODES if isinstance(err, kind)), code_pb2.INTERNAL)
    metadata = {limits.cut(k, limits.METADATA_VALUE): limits.cut(v, limits.METADATA_VALUE)
                for k, v in list(err.metadata.items())[:16]}
    details: list[Any] = [error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=metadata)]
    if isinstance(err, InvalidArgument):
        details.append(bad_request(err.violations))
    if isinstance(err, ChecksFailed):
        details.append(converters.report_to_proto(err.report))
    if isinstance(err, (ChecksFailed, ResourceExhausted)) and err.retry_after:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(err.retry_after * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    return status_pb2.Status(code=code, message=limits.cut_bytes(err.message, limits.MESSAGE_BYTES),
                             details=packed)


def bad_request(violations: list[Violation]) -> error_details_pb2.BadRequest:
    """At most limits.VIOLATIONS violations, each cut to size, within DETAILS_BYTES; one
    more names the first left out and says how many were."""
    out = error_details_pb2.BadRequest()
    size = 0
    for v in violations[:limits.VIOLATIONS]:
        entry = error_details_pb2.BadRequest.FieldViolation(
            field=limits.cut(v.field, limits.VIOLATION_FIELD),
            description=limits.cut(v.description, limits.VIOLATION_DESCRIPTION))
        size += entry.ByteSize() + 4
        if size > limits.DETAILS_BYTES and out.field_violations:
            break
        out.field_violations.append(entry)
    left = len(violations) - len(out.field_violations)
    if left:
        first = violations[len(out.field_violations)]
        out.field_violations.add(
            field=limits.cut(first.field, limits.VIOLATION_FIELD),
            description=f"not described: this and {left - 1:,} more violation(s) were left out of this "
                        f"answer ({len(violations):,} in all); fix those listed and try again")
    return out


def internal(method: str) -> status_pb2.Status:
    ref = uuid.uuid4().hex[:12]
    log.exception("%s failed unexpectedly (ref %s)", method, ref)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN, metadata={"ref": ref}))
    return status_pb2.Status(code=code_pb2.INTERNAL,
                             message=f"internal error; the server log has the details under ref {ref}",
                             details=[info])


class _Unparsed:
    """Stands for a request that was not parsed: `problem` says why (gRPC itself would
    answer UNKNOWN)."""

    def __init__(self, problem: str):
        self.problem = problem


_UNDECODABLE = _Unparsed("the request's bytes are not a valid message of this method "
                         "(truncated, or a string field that is not UTF-8)")


def lenient(parse: Callable[[bytes], Any], max_bytes: int) -> Callable[[bytes], Any]:
    def lenient(data: bytes) -> Any:
        if max_bytes > 0 and len(data) > max_bytes:
            return _Unparsed(f"this method takes requests of at most {max_bytes:,} bytes, got {len(data):,}")
        try:
            return parse(data)
        except DecodeError:
            return _UNDECODABLE
    return lenient


def _parsed(request: Any) -> Any:
    if isinstance(request, _Unparsed):
        raise InvalidArgument([Violation("request", request.problem)])
    return request


def parsed_stream(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A client-streaming handler whose requests are checked as they are read."""
    async def checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            yield _parsed(request)

    def wrapper(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        return fn(checked(requests), context)
    return wrapper


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    status = to_status(exc) if isinstance(exc, MailgateError) else internal(method)
    await context.abort_with_status(rpc_status.to_status(status))


def answer_unary(fn: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(_parsed(request), context)
        except (grpc.aio.AbortError, KeyboardInterrupt):
            raise
        except Exception as exc:
            await _abort(context, exc, method)
    return wrapper


def answer_streaming(fn: Callable[..., Any], method: str) -> Callable[..., Any]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async for item in fn(_parsed(request), context):
                yield item
        except (grpc.aio.AbortError, KeyboardInterrupt):
            raise
        except Exception as exc:
            await _abort(context, exc, method)
    return wrapper
