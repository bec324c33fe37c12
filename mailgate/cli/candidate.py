"""Provider flags -> a Provider message plus the field-mask paths of exactly the
flags given. One table drives both the argparse options and the message, so a flag
cannot exist without its field path."""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from google.protobuf.message import Message

from mailgate.v1 import driver_pb2, provider_pb2

Provider = provider_pb2.Provider
# Driver types with a typed settings message (the oneof member is named after the type).
TYPED = {f.name for f in Provider.DESCRIPTOR.oneofs_by_name["settings"].fields} - {"plugin_settings"}


class UsageError(Exception):
    """The command line cannot work; exit code 2 like argparse's own errors."""


def _enum(enum: Any, prefix: str) -> Callable[[str], int]:
    words = [n.removeprefix(prefix) for n in enum.keys() if not n.endswith("UNSPECIFIED")]

    def parse(text: str) -> int:
        if text.upper() not in words:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(words)}")
        return enum.Value(prefix + text.upper())
    parse.__name__ = prefix.strip("_").lower()
    return parse


def _pem_file(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except (OSError, UnicodeError) as e:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {e}") from e


@dataclass(frozen=True)
class Flag:
    option: str
    path: str  # field path within Provider, or within the driver's settings
    help: str
    type: Any = str  # bool: --x/--no-x; list: repeatable
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.option.removeprefix("--").replace("-", "_")


PROVIDER_FLAGS = (
    Flag("--name", "display_name", "display name; unique (the admin screen's Name)", metavar="NAME"),
    Flag("--account", "account", "mailbox address used to send and receive", metavar="ADDRESS"),
    Flag("--from-name", "from_name", "display name on sent mail", metavar="TEXT"),
    Flag("--reply-to", "reply_to", "Reply-To address; repeat it, or join several with ';'", list,
         metavar="ADDRESS"),
    Flag("--campaign", "campaign", "campaign queue that inbound mail lands in", metavar="NAME"),
    Flag("--receive-emails", "receive_emails", "queue mail arriving at the account", bool),
    Flag("--active-reference", "active_reference", "thread replies by Message-ID/References", bool),
)
SECURITY = _enum(provider_pb2.Security, "SECURITY_")
SMTP_IMAP_FLAGS = (
    Flag("--username", "username", "login name (default: the account)", metavar="LOGIN"),
    Flag("--smtp-host", "smtp.host", "outgoing server", metavar="HOST"),
    Flag("--smtp-port", "smtp.port", "outgoing port", int, "PORT"),
    Flag("--smtp-security", "smtp.security", "outgoing connection security", SECURITY,
         "STARTTLS|TLS|NONE"),
    Flag("--inbound-protocol", "inbound_protocol", "protocol for incoming mail",
         _enum(provider_pb2.InboundProtocol, "INBOUND_PROTOCOL_"), "IMAP|POP3"),
    Flag("--inbound-host", "inbound.host", "incoming server", metavar="HOST"),
    Flag("--inbound-port", "inbound.port", "incoming port", int, "PORT"),
    Flag("--inbound-security", "inbound.security", "incoming connection security", SECURITY,
         "STARTTLS|TLS|NONE"),
    Flag("--ca-file", "ca_certificates_pem", "PEM file of certificates to trust (private servers)",
         _pem_file, "PATH"),
    Flag("--timeout", "timeout_seconds", "network timeout per operation", int, "SECONDS"),
)


def add_flags(parser: argparse.ArgumentParser, *, with_type: bool) -> None:
    if with_type:
        parser.add_argument("--type",
                            help="driver type (default smtp_imap; see `mailgate drivers`)")
    for group, flags in (("provider", PROVIDER_FLAGS), ("smtp_imap settings", SMTP_IMAP_FLAGS)):
        g = parser.add_argument_group(group)
        for f in flags:
            if f.type is bool:
                g.add_argument(f.option, action=argparse.BooleanOptionalAction, help=f.help)
            elif f.type is list:
                g.add_argument(f.option, action="append", metavar=f.metavar, help=f.help)
            else:
                g.add_argument(f.option, type=f.type, metavar=f.metavar, help=f.help)
    g = parser.add_argument_group("plugin driver settings")
    g.add_argument("--setting", action="append", metavar="KEY=VALUE",
                   help="a setting of a plugin driver; dotted keys nest; the value is read as "
                        "JSON when it parses (3, true, [..]) and as text otherwise; repeatable")
    g = parser.add_argument_group("secret (the password, or a plugin's secret setting)")
    how = g.add_mutually_exclusive_group()
    how.add_argument("--password-stdin", action="store_true", help="read it from the first line of stdin")
    how.add_argument("--password-env", metavar="VAR", help="read it from environment variable VAR")
    how.add_argument("--password", metavar="SECRET", help="give it here (lands in shell history; avoid)")


def given(args: argparse.Namespace) -> list[str]:
    """The provider flags on the command line (to refuse them where they mean nothing)."""
    flags = [f.option for f in PROVIDER_FLAGS + SMTP_IMAP_FLAGS if getattr(args, f.dest) is not None]
    extra = [o for o, on in (("--type", getattr(args, "type", None)), ("--setting", args.setting),
                             ("--password", args.password is not None),
                             ("--password-stdin", args.password_stdin),
                             ("--password-env", args.password_env)) if on]
    return flags + extra


def build(args: argparse.Namespace, type_: str, driver: driver_pb2.Driver | None, *,
          prompt: bool) -> tuple[Provider, list[str]]:
    """The Provider the flags describe and the mask paths of the flags given.
    `prompt`: ask for the secret on a terminal when no flag gave it (create, not update)."""
    provider = Provider()
    paths = _apply(args, PROVIDER_FLAGS, provider, "")

    settings_field = type_ if type_ in TYPED else "plugin_settings"
    typed_given = [f.option for f in SMTP_IMAP_FLAGS if getattr(args, f.dest) is not None]
    if typed_given and settings_field != "smtp_imap":
        raise UsageError(f"{typed_given[0]} is a smtp_imap setting; a {type_!r} provider takes "
                         f"--setting KEY=VALUE (see `mailgate drivers {type_}`)")
    if args.setting and settings_field != "plugin_settings":
        raise UsageError(f"--setting is for plugin drivers; {type_} has its own flags (see --help)")

    secrets = [f.path for f in driver.settings if f.secret] if driver else []
    settings: dict[str, Any] = {}
    for item in args.setting or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--setting {item!r}: expected KEY=VALUE")
        if key in secrets:
            warn(f"--setting {key}=... puts a secret in your shell history; "
                 "prefer --password-stdin or --password-env")
        _set_path(settings, key, _value(raw))
        paths.append(f"plugin_settings.{key}")
    if settings_field == "smtp_imap":
        paths += _apply(args, SMTP_IMAP_FLAGS, provider.smtp_imap, "smtp_imap.")

    given_as_setting = any(f"plugin_settings.{s}" in paths for s in secrets)
    secret = read_secret(args, _secret_label(driver, secrets),
                         prompt=prompt and bool(secrets) and not given_as_setting)
    if secret is not None:
        if driver is None:
            raise UsageError(f"no driver {type_!r} is installed (see `mailgate drivers`)")
        if len(secrets) != 1:
            raise UsageError(f"a {type_!r} provider has {len(secrets) or 'no'} secret settings; "
                             "give them with --setting KEY=VALUE")
        if settings_field == "plugin_settings":
            _set_path(settings, secrets[0], secret)
        else:
            _set_field(getattr(provider, settings_field), secrets[0], secret)
        paths.append(f"{settings_field}.{secrets[0]}")
    if settings:
        provider.plugin_settings.update(settings)
    return provider, paths


def read_secret(args: argparse.Namespace, label: str, *, prompt: bool) -> str | None:
    if args.password is not None:
        warn("--password puts the secret in your shell history and the process list; "
             "prefer --password-stdin or --password-env")
        return args.password
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise UsageError("--password-stdin: stdin gave an empty line")
        return line
    if args.password_env:
        value = os.environ.get(args.password_env)
        if not value:
            raise UsageError(f"--password-env: {args.password_env} is not set")
        return value
    if prompt and sys.stdin.isatty():
        return getpass.getpass(f"{label}: ")
    return None


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


def _secret_label(driver: driver_pb2.Driver | None, secrets: Sequence[str]) -> str:
    labels = [f.label or f.path for f in driver.settings if f.path in secrets] if driver else []
    return labels[0] if len(labels) == 1 else "Password"


def _apply(args: argparse.Namespace, flags: Sequence[Flag], msg: Message, prefix: str) -> list[str]:
    paths = []
    for f in flags:
        value = getattr(args, f.dest)
        if value is None:
            continue
        if f.type is list:  # the admin screen's "a;b" habit, and --reply-to '' to clear
            value = [a.strip() for entry in value for a in entry.split(";") if a.strip()]
        _set_field(msg, f.path, value)
        paths.append(prefix + f.path)
    return paths


def _set_field(msg: Message, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        msg = getattr(msg, name)
    if isinstance(value, list):
        del getattr(msg, leaf)[:]
        getattr(msg, leaf).extend(value)
    else:
        setattr(msg, leaf, value)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for name in parents:
        tree = tree.setdefault(name, {})
        if not isinstance(tree, dict):
            raise UsageError(f"--setting {dotted}: {name} is already a value, not a group")
    tree[leaf] = value


def _value(raw: str) -> Any:
    try:  # NaN and Infinity are not JSON, whatever Python's parser says
        return json.loads(raw, parse_constant=lambda c: raw)
    except ValueError:
        return raw
