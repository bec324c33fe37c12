import datetime

from google.api import client_pb2 as _client_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InboundMessage(_message.Message):
    __slots__ = ("name", "provider", "campaign", "message_id", "to", "cc", "reply_to", "subject", "date", "text_body", "html_body", "attachments", "conversation_id", "delivery_count", "automatic", "state", "receive_time", "size_bytes", "oversized", "raw", "parse_defects")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[InboundMessage.State]
        STATE_QUEUED: _ClassVar[InboundMessage.State]
        STATE_DELIVERED: _ClassVar[InboundMessage.State]
        STATE_ACKNOWLEDGED: _ClassVar[InboundMessage.State]
        STATE_DEAD_LETTER: _ClassVar[InboundMessage.State]
    STATE_UNSPECIFIED: InboundMessage.State
    STATE_QUEUED: InboundMessage.State
    STATE_DELIVERED: InboundMessage.State
    STATE_ACKNOWLEDGED: InboundMessage.State
    STATE_DEAD_LETTER: InboundMessage.State
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    CC_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DATE_FIELD_NUMBER: _ClassVar[int]
    TEXT_BODY_FIELD_NUMBER: _ClassVar[int]
    HTML_BODY_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_COUNT_FIELD_NUMBER: _ClassVar[int]
    AUTOMATIC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    OVERSIZED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    PARSE_DEFECTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    provider: str
    campaign: str
    message_id: str
    to: _containers.RepeatedScalarFieldContainer[str]
    cc: _containers.RepeatedScalarFieldContainer[str]
    reply_to: _containers.RepeatedScalarFieldContainer[str]
    subject: str
    date: _timestamp_pb2.Timestamp
    text_body: str
    html_body: str
    attachments: _containers.RepeatedCompositeFieldContainer[InboundAttachment]
    conversation_id: str
    delivery_count: int
    automatic: bool
    state: InboundMessage.State
    receive_time: _timestamp_pb2.Timestamp
    size_bytes: int
    oversized: bool
    raw: bytes
    parse_defects: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., provider: _Optional[str] = ..., campaign: _Optional[str] = ..., message_id: _Optional[str] = ..., to: _Optional[_Iterable[str]] = ..., cc: _Optional[_Iterable[str]] = ..., reply_to: _Optional[_Iterable[str]] = ..., subject: _Optional[str] = ..., date: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., text_body: _Optional[str] = ..., html_body: _Optional[str] = ..., attachments: _Optional[_Iterable[_Union[InboundAttachment, _Mapping]]] = ..., conversation_id: _Optional[str] = ..., delivery_count: _Optional[int] = ..., automatic: _Optional[bool] = ..., state: _Optional[_Union[InboundMessage.State, str]] = ..., receive_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., size_bytes: _Optional[int] = ..., oversized: _Optional[bool] = ..., raw: _Optional[bytes] = ..., parse_defects: _Optional[_Iterable[str]] = ..., **kwargs) -> None: ...

class InboundAttachment(_message.Message):
    __slots__ = ("filename", "content_type", "size_bytes", "content_id", "data")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    filename: str
    content_type: str
    size_bytes: int
    content_id: str
    data: bytes
    def __init__(self, filename: _Optional[str] = ..., content_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., content_id: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class ReceivedInboundMessage(_message.Message):
    __slots__ = ("ack_id", "message")
    ACK_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ack_id: str
    message: InboundMessage
    def __init__(self, ack_id: _Optional[str] = ..., message: _Optional[_Union[InboundMessage, _Mapping]] = ...) -> None: ...

class StreamInboundMailRequest(_message.Message):
    __slots__ = ("campaign", "providers", "consumer", "max_in_flight", "ack_deadline_seconds", "ack_ids", "modify_deadline_ack_ids", "modify_deadline_seconds", "include_raw", "max_in_flight_bytes")
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ACK_DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    MODIFY_DEADLINE_ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    MODIFY_DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RAW_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_BYTES_FIELD_NUMBER: _ClassVar[int]
    campaign: str
    providers: _containers.RepeatedScalarFieldContainer[str]
    consumer: str
    max_in_flight: int
    ack_deadline_seconds: int
    ack_ids: _containers.RepeatedScalarFieldContainer[str]
    modify_deadline_ack_ids: _containers.RepeatedScalarFieldContainer[str]
    modify_deadline_seconds: _containers.RepeatedScalarFieldContainer[int]
    include_raw: bool
    max_in_flight_bytes: int
    def __init__(self, campaign: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ..., consumer: _Optional[str] = ..., max_in_flight: _Optional[int] = ..., ack_deadline_seconds: _Optional[int] = ..., ack_ids: _Optional[_Iterable[str]] = ..., modify_deadline_ack_ids: _Optional[_Iterable[str]] = ..., modify_deadline_seconds: _Optional[_Iterable[int]] = ..., include_raw: _Optional[bool] = ..., max_in_flight_bytes: _Optional[int] = ...) -> None: ...

class StreamInboundMailResponse(_message.Message):
    __slots__ = ("received_messages",)
    RECEIVED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    received_messages: _containers.RepeatedCompositeFieldContainer[ReceivedInboundMessage]
    def __init__(self, received_messages: _Optional[_Iterable[_Union[ReceivedInboundMessage, _Mapping]]] = ...) -> None: ...

class AckInboundMailRequest(_message.Message):
    __slots__ = ("ack_ids",)
    ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    ack_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ack_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetInboundMessageRequest(_message.Message):
    __slots__ = ("name", "include_raw", "include_attachment_data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RAW_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ATTACHMENT_DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    include_raw: bool
    include_attachment_data: bool
    def __init__(self, name: _Optional[str] = ..., include_raw: _Optional[bool] = ..., include_attachment_data: _Optional[bool] = ...) -> None: ...

class ListInboundMessagesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ...) -> None: ...

class ListInboundMessagesResponse(_message.Message):
    __slots__ = ("inbound_messages", "next_page_token")
    INBOUND_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    inbound_messages: _containers.RepeatedCompositeFieldContainer[InboundMessage]
    next_page_token: str
    def __init__(self, inbound_messages: _Optional[_Iterable[_Union[InboundMessage, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RequeueInboundMessageRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...
