import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Check(_message.Message):
    __slots__ = ("id", "side", "host", "port", "outcome", "error_code", "server_message", "duration")
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNSPECIFIED: _ClassVar[Check.Outcome]
        OUTCOME_PASSED: _ClassVar[Check.Outcome]
        OUTCOME_FAILED: _ClassVar[Check.Outcome]
        OUTCOME_SKIPPED: _ClassVar[Check.Outcome]
    OUTCOME_UNSPECIFIED: Check.Outcome
    OUTCOME_PASSED: Check.Outcome
    OUTCOME_FAILED: Check.Outcome
    OUTCOME_SKIPPED: Check.Outcome
    class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ERROR_CODE_UNSPECIFIED: _ClassVar[Check.ErrorCode]
        ERROR_CODE_AUTH_FAILED: _ClassVar[Check.ErrorCode]
        ERROR_CODE_CONNECT_FAILED: _ClassVar[Check.ErrorCode]
        ERROR_CODE_TLS_FAILED: _ClassVar[Check.ErrorCode]
        ERROR_CODE_TIMEOUT: _ClassVar[Check.ErrorCode]
        ERROR_CODE_PROTOCOL_ERROR: _ClassVar[Check.ErrorCode]
        ERROR_CODE_AUTH_UNAVAILABLE: _ClassVar[Check.ErrorCode]
        ERROR_CODE_BACKOFF: _ClassVar[Check.ErrorCode]
        ERROR_CODE_AUTHORIZATION_REQUIRED: _ClassVar[Check.ErrorCode]
        ERROR_CODE_TOKEN_UNAVAILABLE: _ClassVar[Check.ErrorCode]
    ERROR_CODE_UNSPECIFIED: Check.ErrorCode
    ERROR_CODE_AUTH_FAILED: Check.ErrorCode
    ERROR_CODE_CONNECT_FAILED: Check.ErrorCode
    ERROR_CODE_TLS_FAILED: Check.ErrorCode
    ERROR_CODE_TIMEOUT: Check.ErrorCode
    ERROR_CODE_PROTOCOL_ERROR: Check.ErrorCode
    ERROR_CODE_AUTH_UNAVAILABLE: Check.ErrorCode
    ERROR_CODE_BACKOFF: Check.ErrorCode
    ERROR_CODE_AUTHORIZATION_REQUIRED: Check.ErrorCode
    ERROR_CODE_TOKEN_UNAVAILABLE: Check.ErrorCode
    ID_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    SERVER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    id: str
    side: str
    host: str
    port: int
    outcome: Check.Outcome
    error_code: Check.ErrorCode
    server_message: str
    duration: _duration_pb2.Duration
    def __init__(self, id: _Optional[str] = ..., side: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., outcome: _Optional[_Union[Check.Outcome, str]] = ..., error_code: _Optional[_Union[Check.ErrorCode, str]] = ..., server_message: _Optional[str] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ValidationReport(_message.Message):
    __slots__ = ("ok", "checks")
    OK_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    checks: _containers.RepeatedCompositeFieldContainer[Check]
    def __init__(self, ok: _Optional[bool] = ..., checks: _Optional[_Iterable[_Union[Check, _Mapping]]] = ...) -> None: ...
