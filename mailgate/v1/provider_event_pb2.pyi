import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mailgate.v1 import provider_pb2 as _provider_pb2
from mailgate.v1 import validation_pb2 as _validation_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProviderEvent(_message.Message):
    __slots__ = ("name", "type", "event_time", "previous_state", "state", "state_cause", "reason", "check_id", "error_code", "count")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[ProviderEvent.Type]
        TYPE_STATE_CHANGED: _ClassVar[ProviderEvent.Type]
        TYPE_CHECK_FAILED: _ClassVar[ProviderEvent.Type]
        TYPE_RECONNECT: _ClassVar[ProviderEvent.Type]
        TYPE_TOKEN_RENEWED: _ClassVar[ProviderEvent.Type]
        TYPE_TOKEN_RENEWAL_FAILED: _ClassVar[ProviderEvent.Type]
        TYPE_AUTHORIZATION_STARTED: _ClassVar[ProviderEvent.Type]
        TYPE_AUTHORIZATION_COMPLETED: _ClassVar[ProviderEvent.Type]
        TYPE_AUTHORIZATION_FAILED: _ClassVar[ProviderEvent.Type]
    TYPE_UNSPECIFIED: ProviderEvent.Type
    TYPE_STATE_CHANGED: ProviderEvent.Type
    TYPE_CHECK_FAILED: ProviderEvent.Type
    TYPE_RECONNECT: ProviderEvent.Type
    TYPE_TOKEN_RENEWED: ProviderEvent.Type
    TYPE_TOKEN_RENEWAL_FAILED: ProviderEvent.Type
    TYPE_AUTHORIZATION_STARTED: ProviderEvent.Type
    TYPE_AUTHORIZATION_COMPLETED: ProviderEvent.Type
    TYPE_AUTHORIZATION_FAILED: ProviderEvent.Type
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_CAUSE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHECK_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: ProviderEvent.Type
    event_time: _timestamp_pb2.Timestamp
    previous_state: _provider_pb2.Provider.State
    state: _provider_pb2.Provider.State
    state_cause: _provider_pb2.Provider.StateCause
    reason: str
    check_id: str
    error_code: _validation_pb2.Check.ErrorCode
    count: int
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[ProviderEvent.Type, str]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., previous_state: _Optional[_Union[_provider_pb2.Provider.State, str]] = ..., state: _Optional[_Union[_provider_pb2.Provider.State, str]] = ..., state_cause: _Optional[_Union[_provider_pb2.Provider.StateCause, str]] = ..., reason: _Optional[str] = ..., check_id: _Optional[str] = ..., error_code: _Optional[_Union[_validation_pb2.Check.ErrorCode, str]] = ..., count: _Optional[int] = ...) -> None: ...
