from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Driver(_message.Message):
    __slots__ = ("type", "display_name", "description", "capabilities", "settings", "source")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    type: str
    display_name: str
    description: str
    capabilities: Capabilities
    settings: _containers.RepeatedCompositeFieldContainer[SettingField]
    source: str
    def __init__(self, type: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., settings: _Optional[_Iterable[_Union[SettingField, _Mapping]]] = ..., source: _Optional[str] = ...) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("send", "receive", "oauth")
    SEND_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_FIELD_NUMBER: _ClassVar[int]
    OAUTH_FIELD_NUMBER: _ClassVar[int]
    send: bool
    receive: bool
    oauth: bool
    def __init__(self, send: _Optional[bool] = ..., receive: _Optional[bool] = ..., oauth: _Optional[bool] = ...) -> None: ...

class SettingField(_message.Message):
    __slots__ = ("path", "label", "description", "kind", "required", "required_when", "choices", "default_value", "minimum", "maximum", "secret")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[SettingField.Kind]
        KIND_STRING: _ClassVar[SettingField.Kind]
        KIND_INTEGER: _ClassVar[SettingField.Kind]
        KIND_BOOLEAN: _ClassVar[SettingField.Kind]
        KIND_ENUM: _ClassVar[SettingField.Kind]
        KIND_HOSTNAME: _ClassVar[SettingField.Kind]
        KIND_EMAIL: _ClassVar[SettingField.Kind]
        KIND_PEM: _ClassVar[SettingField.Kind]
        KIND_STRING_LIST: _ClassVar[SettingField.Kind]
    KIND_UNSPECIFIED: SettingField.Kind
    KIND_STRING: SettingField.Kind
    KIND_INTEGER: SettingField.Kind
    KIND_BOOLEAN: SettingField.Kind
    KIND_ENUM: SettingField.Kind
    KIND_HOSTNAME: SettingField.Kind
    KIND_EMAIL: SettingField.Kind
    KIND_PEM: SettingField.Kind
    KIND_STRING_LIST: SettingField.Kind
    PATH_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_WHEN_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    path: str
    label: str
    description: str
    kind: SettingField.Kind
    required: bool
    required_when: _containers.RepeatedCompositeFieldContainer[Condition]
    choices: _containers.RepeatedScalarFieldContainer[str]
    default_value: _struct_pb2.Value
    minimum: int
    maximum: int
    secret: bool
    def __init__(self, path: _Optional[str] = ..., label: _Optional[str] = ..., description: _Optional[str] = ..., kind: _Optional[_Union[SettingField.Kind, str]] = ..., required: _Optional[bool] = ..., required_when: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., choices: _Optional[_Iterable[str]] = ..., default_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., minimum: _Optional[int] = ..., maximum: _Optional[int] = ..., secret: _Optional[bool] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("field", "equals")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    EQUALS_FIELD_NUMBER: _ClassVar[int]
    field: str
    equals: _struct_pb2.Value
    def __init__(self, field: _Optional[str] = ..., equals: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
