"""Reading rich gRPC errors (google.rpc.Status details) in tests.

The parsing is the client's (mailgate.client.errors); this adds the raw ErrorInfo /
RetryInfo views that tests assert on, and `expect_error` for the stub calls.
"""
from __future__ import annotations

from typing import Callable

import grpc
from google.rpc import error_details_pb2

from mailgate.client.errors import MailgateError


class RichError(MailgateError):
    @property
    def info(self) -> error_details_pb2.ErrorInfo | None:
        return _first(self, error_details_pb2.ErrorInfo)

    @property
    def retry(self) -> error_details_pb2.RetryInfo | None:
        return _first(self, error_details_pb2.RetryInfo)


def _first(err: MailgateError, kind: type) -> object:
    return next((d for d in err.details if isinstance(d, kind)), None)


def rich_error(err: grpc.RpcError) -> RichError:
    return RichError.from_rpc_error(err)  # type: ignore[return-value]


def expect_error(call: Callable[[], object]) -> RichError:
    """Calls `call`, which must fail with an RpcError; returns the rich error."""
    try:
        result = call()
    except grpc.RpcError as err:
        return rich_error(err)
    raise AssertionError(f"expected an error, got {result!r}")
