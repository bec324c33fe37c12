"""mailgate's errors as one Python exception.

The server answers every failure with a `google.rpc.Status` (AIP-193): an ErrorInfo
(reason + metadata) always, a BadRequest naming each bad field, the ValidationReport
when a check failed, a RetryInfo when it is backing off. `from_rpc_error` is the only
place that unpacks them; the client and the test helpers both use it.
"""
from __future__ import annotations

from typing import Mapping

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mailgate.v1 import validation_pb2

# Detail types we unpack; anything else is kept packed in `details`.
_KNOWN = (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest,
          error_details_pb2.RetryInfo, validation_pb2.ValidationReport)


class MailgateError(Exception):
    """A call to mailgate failed.

    code        grpc.StatusCode
    message     the server's words
    reason      ErrorInfo reason, e.g. SMTP_AUTH_FAILED, NOT_FOUND ("" if none)
    metadata    ErrorInfo metadata, e.g. {"check": "smtp.auth"}
    violations  field path -> description, e.g. {"provider.account": "..."}
    report      the ValidationReport when credentials were checked, else None
    retry_delay seconds to wait before trying again (RetryInfo), else None
    details     every detail message, unpacked when its type is known
    """

    def __init__(self, code: grpc.StatusCode, message: str, *, reason: str = "",
                 domain: str = "", metadata: Mapping[str, str] | None = None,
                 violations: Mapping[str, str] | None = None,
                 report: validation_pb2.ValidationReport | None = None,
                 retry_delay: float | None = None, details: tuple[Message, ...] = ()):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.violations = dict(violations or {})
        self.report = report
        self.retry_delay = retry_delay
        self.details = details

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> "MailgateError":
        """Reads the rich status of a failed call (an RpcError is also a grpc.Call)."""
        if not isinstance(err, grpc.Call):  # an RpcError without a status (rare): no details to read
            return cls(grpc.StatusCode.UNKNOWN, str(err))
        out = cls(err.code(), err.details() or "")
        try:
            status = rpc_status.from_call(err)  # type: ignore[arg-type]
        except ValueError:  # status and call disagree: trust the call's code and message
            status = None
        details: list[Message] = []
        for packed in status.details if status else []:
            details.append(_unpack(packed))
        for d in details:
            if isinstance(d, error_details_pb2.ErrorInfo):
                out.reason, out.domain, out.metadata = d.reason, d.domain, dict(d.metadata)
            elif isinstance(d, error_details_pb2.BadRequest):
                out.violations.update({v.field: v.description for v in d.field_violations})
            elif isinstance(d, error_details_pb2.RetryInfo):
                out.retry_delay = d.retry_delay.ToNanoseconds() / 1e9
            elif isinstance(d, validation_pb2.ValidationReport):
                out.report = d
        out.details = tuple(details)
        return out

    @property
    def code_name(self) -> str:
        return self.code.name if isinstance(self.code, grpc.StatusCode) else str(self.code)

    def __str__(self) -> str:
        # The reason repeats the code for plain errors (INVALID_ARGUMENT INVALID_ARGUMENT).
        head = self.code_name if self.reason in ("", self.code_name) else f"{self.code_name} {self.reason}"
        return f"{head}: {self.message}"

    def __repr__(self) -> str:
        return f"MailgateError({self.code_name}, {self.reason!r}, {self.message!r})"


def from_rpc_error(err: grpc.RpcError) -> MailgateError:
    return MailgateError.from_rpc_error(err)


def _unpack(packed: any_pb2.Any) -> Message:
    for kind in _KNOWN:
        if packed.Is(kind.DESCRIPTOR):
            msg = kind()
            packed.Unpack(msg)
            return msg
    return packed
