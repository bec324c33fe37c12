"""Provider and driver protos <-> domain, and nothing else (the servicer calls
these; the domain never sees a proto). Driver settings travel in Provider's
`settings` oneof: the typed member whose field name is the driver type, or
`plugin_settings` (a Struct)."""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Iterable
from urllib.parse import parse_qsl, urlsplit

from google.api import field_behavior_pb2
from google.protobuf import descriptor, struct_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from mailgate.drivers.api import (CheckResult, Driver, Notice, ProviderConfig, Report,
                                  SettingField)
from mailgate.drivers.registry import DriverRegistry
from mailgate.v1 import driver_pb2, provider_event_pb2, provider_pb2, provider_service_pb2, validation_pb2

from .history import Event
from .state import State, StoredProvider
from ..converters import timestamp
from .. import limits
from ..errors import InvalidArgument, Violation, Violations
from .lifecycle import WRITABLE
from .validation import copy_tree, get_path, set_path

PLUGIN_SETTINGS = "plugin_settings"
_SETTINGS_ONEOF = provider_pb2.Provider.DESCRIPTOR.oneofs_by_name["settings"]
TYPED_SETTINGS = {f.name for f in _SETTINGS_ONEOF.fields} - {PLUGIN_SETTINGS}
OUTPUT_ONLY_FIELDS = {"name", "state", "state_cause", "state_reason", "state_time", "create_time", "update_time",
                      "notices", "etag"}


def settings_field(type_: str) -> str:
    """Name of the oneof member that carries settings of this driver type."""
    return type_ if type_ in TYPED_SETTINGS else PLUGIN_SETTINGS


# ---------------------------------------------------------------- Provider in
def to_config(msg: provider_pb2.Provider, drivers: DriverRegistry,
              stored_type: str | None = None) -> ProviderConfig:
    """`stored_type`: the type of the provider an update applies to."""
    which = msg.WhichOneof("settings")
    type_ = stored_type or msg.type or (which if which in TYPED_SETTINGS else "")
    if which and which != settings_field(type_):
        raise InvalidArgument([Violation(
            f"provider.{which}", f"settings for {which!r} given to a provider of type {type_!r}; "
            f"use {settings_field(type_)!r}")])
    settings: dict[str, Any] = {}
    if which == PLUGIN_SETTINGS:
        settings = MessageToDict(msg.plugin_settings)
    elif which:
        settings = _message_to_dict(getattr(msg, which))
    driver = drivers.get(type_)
    secrets = {}
    for path in _secret_paths(driver):
        value = get_path(settings, path)
        set_path(settings, path, None)
        set_path(settings, path + "_set", None)
        if value:
            secrets[path] = value
    return ProviderConfig(
        type=type_, display_name=msg.display_name, account=msg.account, from_name=msg.from_name,
        receive_emails=msg.receive_emails, active_reference=msg.active_reference,
        reply_to=tuple(msg.reply_to), campaign=msg.campaign, settings=settings, secrets=secrets)


def mask_paths(msg: provider_pb2.Provider, mask: Iterable[str], type_: str,
               drivers: DriverRegistry) -> set[str]:
    """Field-mask paths (AIP-134) -> domain paths (`settings.smtp.port`, `secrets.password`)."""
    paths = list(mask)
    if len(paths) > limits.UPDATE_MASK:
        raise InvalidArgument([Violation("update_mask", f"at most {limits.UPDATE_MASK} paths, got {len(paths):,}")])
    which = settings_field(type_)
    if not paths:  # no mask: every populated field
        paths = [f.name for f, _ in msg.ListFields() if f.name not in OUTPUT_ONLY_FIELDS | {"type"}]
        if msg.WhichOneof("settings") == which and which != PLUGIN_SETTINGS:
            paths.remove(which)
            paths += [f"{which}.{p}" for p in _populated(getattr(msg, which))]
        elif msg.WhichOneof("settings") == which:
            paths.remove(which)
            paths += [f"{which}.{k}" for k in MessageToDict(msg.plugin_settings)]
    elif paths == ["*"]:
        paths = list(WRITABLE) + [which]
    secret = set(_secret_paths(drivers.get(type_)))
    out: set[str] = set()
    for path in paths:
        head, _, rest = path.partition(".")
        if head in WRITABLE and not rest:
            out.add(path)
        elif head == which:
            out.add("settings" if not rest else
                    (f"secrets.{rest}" if rest in secret else f"settings.{rest}"))
        elif head == "type":
            if msg.type and msg.type != type_:
                raise InvalidArgument([Violation("update_mask", "type cannot change; "
                                                 "create a new provider instead")])
        elif head in OUTPUT_ONLY_FIELDS:
            raise InvalidArgument([Violation("update_mask", f"{head} is output only"
                                             + ("; use ActivateProvider" if head == "state" else ""))])
        else:
            raise InvalidArgument([Violation("update_mask", f"{limits.shown(path)} is not a field of a "
                                             f"{type_} provider")])
    return out


def violation_path(domain_path: str, type_: str, drivers: DriverRegistry) -> str:
    """Domain path -> request field path: `settings.smtp.port` -> `provider.smtp_imap.smtp.port`."""
    head, _, rest = domain_path.partition(".")
    if head in ("settings", "secrets"):
        return f"provider.{settings_field(type_)}" + (f".{rest}" if rest else "")
    if head.split("[")[0] in WRITABLE or head == "type":
        return f"provider.{domain_path}"
    return domain_path


# ---------------------------------------------------------------- Provider out
def to_proto(p: StoredProvider, drivers: DriverRegistry,
             notices: Iterable[Notice] = ()) -> provider_pb2.Provider:
    c = p.config
    msg = provider_pb2.Provider(
        name=f"providers/{p.id}", display_name=c.display_name, type=c.type, account=c.account,
        from_name=c.from_name, receive_emails=c.receive_emails,
        active_reference=c.active_reference, reply_to=list(c.reply_to), campaign=c.campaign,
        state=_state(p.state),
        state_cause=provider_pb2.Provider.StateCause.Value(f"STATE_CAUSE_{p.cause.value}"),
        state_reason=p.state_reason, state_time=timestamp(p.state_time), create_time=timestamp(p.create_time),
        update_time=timestamp(p.update_time), etag=p.etag,
        notices=notices_to_proto(notices, c.type, drivers))
    settings = copy_tree(c.settings)
    for path in _secret_paths(drivers.get(c.type)):  # secrets are input-only: say only "set"
        set_path(settings, path + "_set", bool(c.secrets.get(path)))
    which = settings_field(c.type)
    if which == PLUGIN_SETTINGS:
        if settings:
            msg.plugin_settings.update(settings)
    else:
        _dict_to_message(settings, getattr(msg, which))
    return msg


def notices_to_proto(notices: Iterable[Notice], type_: str,
                     drivers: DriverRegistry) -> list[provider_pb2.Notice]:
    return [provider_pb2.Notice(code=n.code, field=violation_path(n.field, type_, drivers),
                                message=n.message) for n in notices]


def report_to_proto(report: Report) -> validation_pb2.ValidationReport:
    return validation_pb2.ValidationReport(ok=report.ok, checks=[_check(c) for c in report.checks])


def _check(c: CheckResult) -> validation_pb2.Check:
    d = Duration()
    d.FromTimedelta(timedelta(seconds=c.duration))
    return validation_pb2.Check(
        id=c.id, side=c.side, host=c.host, port=c.port,
        outcome=validation_pb2.Check.Outcome.Value(f"OUTCOME_{c.outcome.value}"),
        error_code=validation_pb2.Check.ErrorCode.Value(f"ERROR_CODE_{c.error_code.value}"),
        server_message=c.server_message, duration=d)


def event_to_proto(e: Event) -> provider_event_pb2.ProviderEvent:
    assert e.time is not None
    return provider_event_pb2.ProviderEvent(
        name=f"providers/{e.provider_id}/events/{e.seq}",
        type=provider_event_pb2.ProviderEvent.Type.Value(f"TYPE_{e.type.value}"),
        event_time=timestamp(e.time),
        previous_state=_state(e.previous_state), state=_state(e.state),
        state_cause=provider_pb2.Provider.StateCause.Value(f"STATE_CAUSE_{e.cause.value}") if e.cause else 0,
        reason=e.reason, check_id=e.check_id,
        error_code=validation_pb2.Check.ErrorCode.Value(f"ERROR_CODE_{e.error_code}") if e.error_code else 0,
        count=e.count)


def _state(s: State | None) -> int:
    return provider_pb2.Provider.State.Value(f"STATE_{s.value}") if s else 0


def state_from_proto(value: int) -> State:
    return State(provider_pb2.Provider.State.Name(value).removeprefix("STATE_"))


def authorization_response(r: provider_service_pb2.CompleteAuthorizationRequest) -> tuple[str, dict[str, str]]:
    """(state, the redirect's parameters) from either form of the request."""
    v = Violations()
    for name in ("state", "code", "error", "error_description"):
        if len(getattr(r, name)) > limits.AUTHORIZATION_FIELD:
            v.add(name, limits.too_long(limits.AUTHORIZATION_FIELD, len(getattr(r, name))))
    if len(r.authorization_response) > limits.AUTHORIZATION_RESPONSE:
        v.add("authorization_response", limits.too_long(limits.AUTHORIZATION_RESPONSE, len(r.authorization_response)))
    v.raise_if_any()
    if r.authorization_response:
        if r.state or r.code or r.error:
            raise InvalidArgument([Violation("authorization_response", "give either the whole redirect "
                                             "URL or state with code (or error), not both")])
        params = dict(parse_qsl(urlsplit(r.authorization_response).query))
        where = "authorization_response"
    else:
        params = {k: v for k, v in (("state", r.state), ("code", r.code), ("error", r.error),
                                    ("error_description", r.error_description)) if v}
        where = "state"
    if not params.get("state"):
        raise InvalidArgument([Violation(where, "required: the state parameter of the redirect")])
    if not params.get("code") and not params.get("error"):
        raise InvalidArgument([Violation("code" if where == "state" else where,
                                         "required: the code (or error) parameter of the redirect")])
    return params["state"], params


# ---------------------------------------------------------------- drivers
def driver_to_proto(d: Driver, source: str) -> driver_pb2.Driver:
    return driver_pb2.Driver(
        type=d.type, display_name=d.display_name, description=d.description, source=source,
        capabilities=driver_pb2.Capabilities(send=d.capabilities.send, receive=d.capabilities.receive,
                                             oauth=d.capabilities.oauth),
        settings=[_field(f) for f in d.settings_schema])


def _field(f: SettingField) -> driver_pb2.SettingField:
    msg = driver_pb2.SettingField(
        path=f.path, label=f.label, description=f.description,
        kind=driver_pb2.SettingField.Kind.Value(f"KIND_{f.kind.value}"), required=f.required,
        required_when=[driver_pb2.Condition(field=k, equals=_value(v))
                       for k, v in f.required_when.items()],
        choices=list(f.choices), minimum=f.minimum or 0, maximum=f.maximum or 0, secret=f.secret)
    if f.default is not None:
        msg.default_value.CopyFrom(_value(f.default))
    return msg


# ---------------------------------------------------------------- helpers
def _value(v: Any) -> struct_pb2.Value:
    s = struct_pb2.Struct()
    s.update({"v": v})
    return s.fields["v"]


def _secret_paths(driver: Driver | None) -> list[str]:
    return [f.path for f in driver.settings_schema if f.secret] if driver else []


def _output_only(fd: descriptor.FieldDescriptor) -> bool:
    return field_behavior_pb2.OUTPUT_ONLY in fd.GetOptions().Extensions[field_behavior_pb2.field_behavior]


def _enum_prefix(fd: descriptor.FieldDescriptor) -> str:
    """buf style prefixes enum values with the enum's name: Security -> SECURITY_."""
    name = fd.enum_type.name
    return "".join(f"_{ch}" if ch.isupper() and i else ch for i, ch in enumerate(name)).upper() + "_"


def _message_to_dict(msg: Message) -> dict[str, Any]:
    """Set fields only, enums as their short names (`STARTTLS`), output-only dropped."""
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        if _output_only(fd):
            continue
        if fd.message_type:
            out[fd.name] = _message_to_dict(value)
        elif fd.enum_type:
            name = fd.enum_type.values_by_number[value].name.removeprefix(_enum_prefix(fd))
            if name != "UNSPECIFIED":
                out[fd.name] = name
        else:
            out[fd.name] = list(value) if fd.is_repeated else value
    return out


def _dict_to_message(tree: dict[str, Any], msg: Message) -> None:
    for key, value in tree.items():
        fd = msg.DESCRIPTOR.fields_by_name.get(key)
        if fd is None:
            continue  # a setting the typed message does not know: stored, not shown
        if fd.message_type and isinstance(value, dict):
            _dict_to_message(value, getattr(msg, key))
        elif fd.enum_type:
            ev = fd.enum_type.values_by_name.get(_enum_prefix(fd) + str(value))
            if ev:
                setattr(msg, key, ev.number)
        elif fd.is_repeated:
            getattr(msg, key).extend(value)
        else:
            setattr(msg, key, value)


def _populated(msg: Message, prefix: str = "") -> list[str]:
    paths = []
    for fd, value in msg.ListFields():
        if fd.message_type:
            paths += _populated(value, f"{prefix}{fd.name}.")
        elif not _output_only(fd):
            paths.append(prefix + fd.name)
    return paths
