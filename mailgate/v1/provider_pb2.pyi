import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Security(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SECURITY_UNSPECIFIED: _ClassVar[Security]
    SECURITY_STARTTLS: _ClassVar[Security]
    SECURITY_TLS: _ClassVar[Security]
    SECURITY_NONE: _ClassVar[Security]

class InboundProtocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INBOUND_PROTOCOL_UNSPECIFIED: _ClassVar[InboundProtocol]
    INBOUND_PROTOCOL_IMAP: _ClassVar[InboundProtocol]
    INBOUND_PROTOCOL_POP3: _ClassVar[InboundProtocol]
SECURITY_UNSPECIFIED: Security
SECURITY_STARTTLS: Security
SECURITY_TLS: Security
SECURITY_NONE: Security
INBOUND_PROTOCOL_UNSPECIFIED: InboundProtocol
INBOUND_PROTOCOL_IMAP: InboundProtocol
INBOUND_PROTOCOL_POP3: InboundProtocol

class Provider(_message.Message):
    __slots__ = ("name", "display_name", "type", "account", "from_name", "receive_emails", "active_reference", "reply_to", "campaign", "state", "state_reason", "state_cause", "state_time", "create_time", "update_time", "etag", "notices", "smtp_imap", "outlook", "gmail", "plugin_settings")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Provider.State]
        STATE_GREY: _ClassVar[Provider.State]
        STATE_GREEN: _ClassVar[Provider.State]
        STATE_RED: _ClassVar[Provider.State]
    STATE_UNSPECIFIED: Provider.State
    STATE_GREY: Provider.State
    STATE_GREEN: Provider.State
    STATE_RED: Provider.State
    class StateCause(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_CAUSE_UNSPECIFIED: _ClassVar[Provider.StateCause]
        STATE_CAUSE_CHECKS_PASSED: _ClassVar[Provider.StateCause]
        STATE_CAUSE_RECOVERED: _ClassVar[Provider.StateCause]
        STATE_CAUSE_AUTHORIZATION_PENDING: _ClassVar[Provider.StateCause]
        STATE_CAUSE_CHECKS_FAILED: _ClassVar[Provider.StateCause]
        STATE_CAUSE_AUTHORIZATION_FAILED: _ClassVar[Provider.StateCause]
        STATE_CAUSE_AUTHORIZATION_LOST: _ClassVar[Provider.StateCause]
        STATE_CAUSE_LOGIN_REFUSED: _ClassVar[Provider.StateCause]
        STATE_CAUSE_MAILBOX_UNREACHABLE: _ClassVar[Provider.StateCause]
    STATE_CAUSE_UNSPECIFIED: Provider.StateCause
    STATE_CAUSE_CHECKS_PASSED: Provider.StateCause
    STATE_CAUSE_RECOVERED: Provider.StateCause
    STATE_CAUSE_AUTHORIZATION_PENDING: Provider.StateCause
    STATE_CAUSE_CHECKS_FAILED: Provider.StateCause
    STATE_CAUSE_AUTHORIZATION_FAILED: Provider.StateCause
    STATE_CAUSE_AUTHORIZATION_LOST: Provider.StateCause
    STATE_CAUSE_LOGIN_REFUSED: Provider.StateCause
    STATE_CAUSE_MAILBOX_UNREACHABLE: Provider.StateCause
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    FROM_NAME_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_EMAILS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    STATE_CAUSE_FIELD_NUMBER: _ClassVar[int]
    STATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    SMTP_IMAP_FIELD_NUMBER: _ClassVar[int]
    OUTLOOK_FIELD_NUMBER: _ClassVar[int]
    GMAIL_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    type: str
    account: str
    from_name: str
    receive_emails: bool
    active_reference: bool
    reply_to: _containers.RepeatedScalarFieldContainer[str]
    campaign: str
    state: Provider.State
    state_reason: str
    state_cause: Provider.StateCause
    state_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    notices: _containers.RepeatedCompositeFieldContainer[Notice]
    smtp_imap: SmtpImapSettings
    outlook: OAuthMailboxSettings
    gmail: OAuthMailboxSettings
    plugin_settings: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., type: _Optional[str] = ..., account: _Optional[str] = ..., from_name: _Optional[str] = ..., receive_emails: _Optional[bool] = ..., active_reference: _Optional[bool] = ..., reply_to: _Optional[_Iterable[str]] = ..., campaign: _Optional[str] = ..., state: _Optional[_Union[Provider.State, str]] = ..., state_reason: _Optional[str] = ..., state_cause: _Optional[_Union[Provider.StateCause, str]] = ..., state_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., notices: _Optional[_Iterable[_Union[Notice, _Mapping]]] = ..., smtp_imap: _Optional[_Union[SmtpImapSettings, _Mapping]] = ..., outlook: _Optional[_Union[OAuthMailboxSettings, _Mapping]] = ..., gmail: _Optional[_Union[OAuthMailboxSettings, _Mapping]] = ..., plugin_settings: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("host", "port", "security")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    SECURITY_FIELD_NUMBER: _ClassVar[int]
    host: str
    port: int
    security: Security
    def __init__(self, host: _Optional[str] = ..., port: _Optional[int] = ..., security: _Optional[_Union[Security, str]] = ...) -> None: ...

class SmtpImapSettings(_message.Message):
    __slots__ = ("username", "password", "password_set", "smtp", "inbound_protocol", "inbound", "ca_certificates_pem", "timeout_seconds", "sending_limits", "sent_folder", "folders", "allow_plaintext_login")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_SET_FIELD_NUMBER: _ClassVar[int]
    SMTP_FIELD_NUMBER: _ClassVar[int]
    INBOUND_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    INBOUND_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATES_PEM_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SENDING_LIMITS_FIELD_NUMBER: _ClassVar[int]
    SENT_FOLDER_FIELD_NUMBER: _ClassVar[int]
    FOLDERS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PLAINTEXT_LOGIN_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    password_set: bool
    smtp: Endpoint
    inbound_protocol: InboundProtocol
    inbound: Endpoint
    ca_certificates_pem: str
    timeout_seconds: int
    sending_limits: SendingLimits
    sent_folder: str
    folders: _containers.RepeatedScalarFieldContainer[str]
    allow_plaintext_login: bool
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ..., password_set: _Optional[bool] = ..., smtp: _Optional[_Union[Endpoint, _Mapping]] = ..., inbound_protocol: _Optional[_Union[InboundProtocol, str]] = ..., inbound: _Optional[_Union[Endpoint, _Mapping]] = ..., ca_certificates_pem: _Optional[str] = ..., timeout_seconds: _Optional[int] = ..., sending_limits: _Optional[_Union[SendingLimits, _Mapping]] = ..., sent_folder: _Optional[str] = ..., folders: _Optional[_Iterable[str]] = ..., allow_plaintext_login: _Optional[bool] = ...) -> None: ...

class OAuthMailboxSettings(_message.Message):
    __slots__ = ("access", "smtp", "imap", "timeout_seconds", "sending_limits", "ca_certificates_pem", "folders", "allow_plaintext_login")
    class Access(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACCESS_UNSPECIFIED: _ClassVar[OAuthMailboxSettings.Access]
        ACCESS_DELEGATED: _ClassVar[OAuthMailboxSettings.Access]
        ACCESS_APP_ONLY: _ClassVar[OAuthMailboxSettings.Access]
    ACCESS_UNSPECIFIED: OAuthMailboxSettings.Access
    ACCESS_DELEGATED: OAuthMailboxSettings.Access
    ACCESS_APP_ONLY: OAuthMailboxSettings.Access
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    SMTP_FIELD_NUMBER: _ClassVar[int]
    IMAP_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SENDING_LIMITS_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATES_PEM_FIELD_NUMBER: _ClassVar[int]
    FOLDERS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PLAINTEXT_LOGIN_FIELD_NUMBER: _ClassVar[int]
    access: OAuthMailboxSettings.Access
    smtp: Endpoint
    imap: Endpoint
    timeout_seconds: int
    sending_limits: SendingLimits
    ca_certificates_pem: str
    folders: _containers.RepeatedScalarFieldContainer[str]
    allow_plaintext_login: bool
    def __init__(self, access: _Optional[_Union[OAuthMailboxSettings.Access, str]] = ..., smtp: _Optional[_Union[Endpoint, _Mapping]] = ..., imap: _Optional[_Union[Endpoint, _Mapping]] = ..., timeout_seconds: _Optional[int] = ..., sending_limits: _Optional[_Union[SendingLimits, _Mapping]] = ..., ca_certificates_pem: _Optional[str] = ..., folders: _Optional[_Iterable[str]] = ..., allow_plaintext_login: _Optional[bool] = ...) -> None: ...

class SendingLimits(_message.Message):
    __slots__ = ("per_minute", "per_day")
    PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    PER_DAY_FIELD_NUMBER: _ClassVar[int]
    per_minute: int
    per_day: int
    def __init__(self, per_minute: _Optional[int] = ..., per_day: _Optional[int] = ...) -> None: ...

class Notice(_message.Message):
    __slots__ = ("code", "field", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    field: str
    message: str
    def __init__(self, code: _Optional[str] = ..., field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
