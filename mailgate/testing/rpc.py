"""Reading rich gRPC errors (google.rpc.Status details) in tests."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mailgate.v1 import validation_pb2


@dataclass
class RichError:
    code: grpc.StatusCode
    message: str
    info: error_details_pb2.ErrorInfo | None = None
    violations: dict[str, str] = field(default_factory=dict)  # field path -> description
    report: validation_pb2.ValidationReport | None = None
    retry: error_details_pb2.RetryInfo | None = None


def rich_error(err: grpc.RpcError) -> RichError:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    out = RichError(err.code(), err.details() or "")  # type: ignore[attr-defined]
    for detail in status.details if status else []:
        for kind, attr in ((error_details_pb2.ErrorInfo, "info"),
                           (validation_pb2.ValidationReport, "report"),
                           (error_details_pb2.RetryInfo, "retry")):
            if detail.Is(kind.DESCRIPTOR):
                msg = kind()
                detail.Unpack(msg)
                setattr(out, attr, msg)
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.violations = {v.field: v.description for v in bad.field_violations}
    return out


def expect_error(call: Callable[[], object]) -> RichError:
    """Calls `call`, which must fail with an RpcError; returns the rich error."""
    try:
        result = call()
    except grpc.RpcError as err:
        return rich_error(err)
    raise AssertionError(f"expected an error, got {result!r}")
