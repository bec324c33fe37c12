import datetime

from google.api import client_pb2 as _client_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Attachment(_message.Message):
    __slots__ = ("filename", "content_type", "data", "size_bytes")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    filename: str
    content_type: str
    data: bytes
    size_bytes: int
    def __init__(self, filename: _Optional[str] = ..., content_type: _Optional[str] = ..., data: _Optional[bytes] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class SendEmailRequest(_message.Message):
    __slots__ = ("provider", "to", "cc", "bcc", "subject", "text_body", "html_body", "attachments", "reply_to_message_id", "reply_to_outbound_message", "request_id")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    CC_FIELD_NUMBER: _ClassVar[int]
    BCC_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TEXT_BODY_FIELD_NUMBER: _ClassVar[int]
    HTML_BODY_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_OUTBOUND_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    provider: str
    to: _containers.RepeatedScalarFieldContainer[str]
    cc: _containers.RepeatedScalarFieldContainer[str]
    bcc: _containers.RepeatedScalarFieldContainer[str]
    subject: str
    text_body: str
    html_body: str
    attachments: _containers.RepeatedCompositeFieldContainer[Attachment]
    reply_to_message_id: str
    reply_to_outbound_message: str
    request_id: str
    def __init__(self, provider: _Optional[str] = ..., to: _Optional[_Iterable[str]] = ..., cc: _Optional[_Iterable[str]] = ..., bcc: _Optional[_Iterable[str]] = ..., subject: _Optional[str] = ..., text_body: _Optional[str] = ..., html_body: _Optional[str] = ..., attachments: _Optional[_Iterable[_Union[Attachment, _Mapping]]] = ..., reply_to_message_id: _Optional[str] = ..., reply_to_outbound_message: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class OutboundMessage(_message.Message):
    __slots__ = ("name", "provider", "message_id", "conversation_id", "state", "to", "cc", "bcc", "subject", "attachments", "attempts", "next_attempt_time", "last_error", "create_time", "sent_time", "size_bytes", "request_id")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[OutboundMessage.State]
        STATE_QUEUED: _ClassVar[OutboundMessage.State]
        STATE_SENT: _ClassVar[OutboundMessage.State]
        STATE_RETRYING: _ClassVar[OutboundMessage.State]
        STATE_FAILED: _ClassVar[OutboundMessage.State]
    STATE_UNSPECIFIED: OutboundMessage.State
    STATE_QUEUED: OutboundMessage.State
    STATE_SENT: OutboundMessage.State
    STATE_RETRYING: OutboundMessage.State
    STATE_FAILED: OutboundMessage.State
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    CC_FIELD_NUMBER: _ClassVar[int]
    BCC_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SENT_TIME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    provider: str
    message_id: str
    conversation_id: str
    state: OutboundMessage.State
    to: _containers.RepeatedScalarFieldContainer[str]
    cc: _containers.RepeatedScalarFieldContainer[str]
    bcc: _containers.RepeatedScalarFieldContainer[str]
    subject: str
    attachments: _containers.RepeatedCompositeFieldContainer[Attachment]
    attempts: int
    next_attempt_time: _timestamp_pb2.Timestamp
    last_error: DeliveryError
    create_time: _timestamp_pb2.Timestamp
    sent_time: _timestamp_pb2.Timestamp
    size_bytes: int
    request_id: str
    def __init__(self, name: _Optional[str] = ..., provider: _Optional[str] = ..., message_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., state: _Optional[_Union[OutboundMessage.State, str]] = ..., to: _Optional[_Iterable[str]] = ..., cc: _Optional[_Iterable[str]] = ..., bcc: _Optional[_Iterable[str]] = ..., subject: _Optional[str] = ..., attachments: _Optional[_Iterable[_Union[Attachment, _Mapping]]] = ..., attempts: _Optional[int] = ..., next_attempt_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[_Union[DeliveryError, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sent_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., size_bytes: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeliveryError(_message.Message):
    __slots__ = ("smtp_code", "message", "transient")
    SMTP_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRANSIENT_FIELD_NUMBER: _ClassVar[int]
    smtp_code: int
    message: str
    transient: bool
    def __init__(self, smtp_code: _Optional[int] = ..., message: _Optional[str] = ..., transient: _Optional[bool] = ...) -> None: ...

class GetOutboundMessageRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListOutboundMessagesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ...) -> None: ...

class ListOutboundMessagesResponse(_message.Message):
    __slots__ = ("outbound_messages", "next_page_token")
    OUTBOUND_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    outbound_messages: _containers.RepeatedCompositeFieldContainer[OutboundMessage]
    next_page_token: str
    def __init__(self, outbound_messages: _Optional[_Iterable[_Union[OutboundMessage, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
