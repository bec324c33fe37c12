import datetime

from google.api import client_pb2 as _client_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mailgate.v1 import driver_pb2 as _driver_pb2
from mailgate.v1 import provider_pb2 as _provider_pb2
from mailgate.v1 import provider_event_pb2 as _provider_event_pb2
from mailgate.v1 import validation_pb2 as _validation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateProviderRequest(_message.Message):
    __slots__ = ("provider", "validate_only")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    provider: _provider_pb2.Provider
    validate_only: bool
    def __init__(self, provider: _Optional[_Union[_provider_pb2.Provider, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetProviderRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListProvidersRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ...) -> None: ...

class ListProvidersResponse(_message.Message):
    __slots__ = ("providers", "next_page_token")
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[_provider_pb2.Provider]
    next_page_token: str
    def __init__(self, providers: _Optional[_Iterable[_Union[_provider_pb2.Provider, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateProviderRequest(_message.Message):
    __slots__ = ("provider", "update_mask", "validate_only")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    provider: _provider_pb2.Provider
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, provider: _Optional[_Union[_provider_pb2.Provider, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteProviderRequest(_message.Message):
    __slots__ = ("name", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class ValidateProviderRequest(_message.Message):
    __slots__ = ("name", "provider")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    name: str
    provider: _provider_pb2.Provider
    def __init__(self, name: _Optional[str] = ..., provider: _Optional[_Union[_provider_pb2.Provider, _Mapping]] = ...) -> None: ...

class ValidateProviderResponse(_message.Message):
    __slots__ = ("report", "notices")
    REPORT_FIELD_NUMBER: _ClassVar[int]
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    report: _validation_pb2.ValidationReport
    notices: _containers.RepeatedCompositeFieldContainer[_provider_pb2.Notice]
    def __init__(self, report: _Optional[_Union[_validation_pb2.ValidationReport, _Mapping]] = ..., notices: _Optional[_Iterable[_Union[_provider_pb2.Notice, _Mapping]]] = ...) -> None: ...

class ActivateProviderRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ActivateProviderResponse(_message.Message):
    __slots__ = ("provider", "report", "authorization")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    provider: _provider_pb2.Provider
    report: _validation_pb2.ValidationReport
    authorization: AuthorizationRequest
    def __init__(self, provider: _Optional[_Union[_provider_pb2.Provider, _Mapping]] = ..., report: _Optional[_Union[_validation_pb2.ValidationReport, _Mapping]] = ..., authorization: _Optional[_Union[AuthorizationRequest, _Mapping]] = ...) -> None: ...

class AuthorizationRequest(_message.Message):
    __slots__ = ("authorization_uri", "state", "expire_time")
    AUTHORIZATION_URI_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    authorization_uri: str
    state: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, authorization_uri: _Optional[str] = ..., state: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CompleteAuthorizationRequest(_message.Message):
    __slots__ = ("state", "code", "error", "error_description", "authorization_response")
    STATE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    state: str
    code: str
    error: str
    error_description: str
    authorization_response: str
    def __init__(self, state: _Optional[str] = ..., code: _Optional[str] = ..., error: _Optional[str] = ..., error_description: _Optional[str] = ..., authorization_response: _Optional[str] = ...) -> None: ...

class CompleteAuthorizationResponse(_message.Message):
    __slots__ = ("provider", "report")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    provider: _provider_pb2.Provider
    report: _validation_pb2.ValidationReport
    def __init__(self, provider: _Optional[_Union[_provider_pb2.Provider, _Mapping]] = ..., report: _Optional[_Union[_validation_pb2.ValidationReport, _Mapping]] = ...) -> None: ...

class ListProviderEventsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "filter")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    filter: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ...) -> None: ...

class ListProviderEventsResponse(_message.Message):
    __slots__ = ("provider_events", "next_page_token")
    PROVIDER_EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    provider_events: _containers.RepeatedCompositeFieldContainer[_provider_event_pb2.ProviderEvent]
    next_page_token: str
    def __init__(self, provider_events: _Optional[_Iterable[_Union[_provider_event_pb2.ProviderEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListDriversRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDriversResponse(_message.Message):
    __slots__ = ("drivers", "next_page_token")
    DRIVERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    drivers: _containers.RepeatedCompositeFieldContainer[_driver_pb2.Driver]
    next_page_token: str
    def __init__(self, drivers: _Optional[_Iterable[_Union[_driver_pb2.Driver, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
