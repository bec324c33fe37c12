"""What the CLI prints: tables and key: value blocks for people, protobuf JSON for
programs (`--json`). Nothing here talks to the server."""
from __future__ import annotations

import json
import os
import shutil
from datetime import timezone
from itertools import islice
from typing import Any, Iterable, Iterator, Sequence, TextIO, TypeVar

from google.protobuf import json_format, struct_pb2
from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message

from mailgate.client import MailgateError
from mailgate.v1 import driver_pb2, inbound_service_pb2, mail_service_pb2, provider_event_pb2, provider_pb2, validation_pb2

Provider = provider_pb2.Provider
Check = validation_pb2.Check
OutboundMessage = mail_service_pb2.OutboundMessage
InboundMessage = inbound_service_pb2.InboundMessage
ProviderEvent = provider_event_pb2.ProviderEvent
T = TypeVar("T")

# ANSI colours by the word they paint.
_COLOURS = {"GREEN": "32", "PASSED": "32", "SENT": "32", "ACKNOWLEDGED": "32",
            "RED": "31", "FAILED": "31", "DEAD_LETTER": "31", "GREY": "90",
            "SKIPPED": "33", "RETRYING": "33", "warn": "33"}

Cell = str | tuple[str, str]  # plain text, or (text, colour key)


class Stream:
    """A text stream plus whether it may carry colour: only a terminal, and only
    while NO_COLOR (no-color.org) is unset."""

    def __init__(self, file: TextIO):
        self.file = file
        isatty = getattr(file, "isatty", lambda: False)
        self.colour = isatty() and "NO_COLOR" not in os.environ

    def print(self, text: str = "") -> None:
        print(text, file=self.file)

    def paint(self, text: str, key: str) -> str:
        code = _COLOURS.get(key)
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour and code and text else text


# ------------------------------------------------------------------ building blocks
def table(out: Stream, headers: Sequence[str], rows: Iterable[Sequence[Cell]],
          right: frozenset[int] = frozenset(), fit_last: bool = False) -> None:
    """Aligned columns. Widths come from the plain text, so colour never skews them;
    `fit_last` truncates the last column to the terminal width."""
    rows = [[(c, "") if isinstance(c, str) else c for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i][0]) for r in rows]) for i, h in enumerate(headers)]
    if fit_last and rows:
        room = shutil.get_terminal_size((120, 24)).columns - sum(widths[:-1]) - 2 * (len(widths) - 1)
        limit = max(room, 24)
        rows = [r[:-1] + [(truncate(r[-1][0], limit), r[-1][1])] for r in rows]
        widths[-1] = min(widths[-1], max(limit, len(headers[-1])))

    def line(cells: Sequence[tuple[str, str]]) -> str:
        parts = []
        for i, (text, colour) in enumerate(cells):
            pad = " " * (widths[i] - len(text))
            painted = out.paint(text, colour)
            parts.append(pad + painted if i in right else painted + pad)
        return "  ".join(parts).rstrip()

    out.print(line([(h, "") for h in headers]))
    for row in rows:
        out.print(line(row))


def keyvalues(out: Stream, pairs: Sequence[tuple[str, Cell]], indent: str = "") -> None:
    width = max((len(k) for k, _ in pairs), default=0) + 1
    for key, value in pairs:
        text, colour = (value, "") if isinstance(value, str) else value
        text = text or "-"
        out.print(f"{indent}{(key + ':').ljust(width)} {out.paint(text, colour)}".rstrip())


def truncate(text: str, limit: int) -> str:
    text = " ".join(text.split())  # one line per row, whatever the server wrote
    return text if len(text) <= limit else text[: limit - 1] + "…"


def state_word(state: int) -> str:
    return enum_word(Provider.State.DESCRIPTOR, state)


def enum_word(enum: EnumDescriptor, value: int) -> str:
    """SECURITY_STARTTLS -> STARTTLS: drop the prefix every value of the enum shares."""
    prefix = os.path.commonprefix([v.name for v in enum.values])
    prefix = prefix[: prefix.rfind("_") + 1]
    return enum.values_by_number[value].name.removeprefix(prefix)


def when(ts: Any) -> str:
    if not ts.seconds and not ts.nanos:
        return ""
    return ts.ToDatetime(tzinfo=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def limited(items: Iterator[T], limit: int) -> list[T]:
    """The first `limit` of a listing (0: all of it)."""
    return list(islice(items, limit) if limit > 0 else items)


def page_size(limit: int) -> int:
    """The page size that fetches `limit` items (0: all) in the fewest calls."""
    return min(limit, 1000) if limit > 0 else 1000


def to_json(message: Message | Sequence[Message]) -> str:
    if isinstance(message, Message):
        return json_format.MessageToJson(message, indent=2)
    return json.dumps([json_format.MessageToDict(m) for m in message], indent=2)


# ------------------------------------------------------------------ providers
def provider_table(out: Stream, providers: Sequence[Provider]) -> None:
    table(out, ["NAME", "TYPE", "ACCOUNT", "STATE", "CAMPAIGN", "REASON"],
          [[p.display_name, p.type, p.account, (state_word(p.state), state_word(p.state)),
            p.campaign, p.state_reason] for p in providers], fit_last=True)


def provider_details(out: Stream, p: Provider) -> None:
    state = state_word(p.state)
    since = when(p.state_time)
    keyvalues(out, [
        ("name", p.display_name),
        ("resource", p.name),
        ("type", p.type),
        ("account", p.account),
        ("from name", p.from_name),
        ("reply to", ", ".join(p.reply_to)),
        ("campaign", p.campaign),
        ("receive emails", "yes" if p.receive_emails else "no"),
        ("active reference", "yes" if p.active_reference else "no"),
        ("state", (f"{state}" + (f"  since {since}" if since else ""), state)),
        ("cause", enum_word(Provider.StateCause.DESCRIPTOR, p.state_cause)),
        ("reason", p.state_reason),
        ("created", when(p.create_time)),
        ("updated", when(p.update_time)),
        ("etag", p.etag),
    ])
    settings = settings_pairs(p)
    if settings:
        out.print("settings:")
        keyvalues(out, settings, indent="  ")
    notices(out, p.notices)


def settings_pairs(p: Provider) -> list[tuple[str, str]]:
    """Driver settings as dotted paths (as in the driver's schema). A secret shows
    only as `set` / `not set`: `password_set: true` -> `password: set`."""
    which = p.WhichOneof("settings")
    if not which:
        return []
    settings = getattr(p, which)
    flat = _flatten_struct(settings) if which == "plugin_settings" else _flatten_message(settings)
    out = []
    for path, value in flat:
        if path.endswith("_set") and isinstance(value, bool):
            out.append((path.removesuffix("_set"), "set" if value else "not set"))
        elif isinstance(value, str) and "-----BEGIN CERTIFICATE-----" in value:
            n = value.count("-----BEGIN CERTIFICATE-----")
            out.append((path, f"{n} PEM certificate{'s' if n > 1 else ''}"))
        else:
            out.append((path, plain(value)))
    return out


def plain(value: Any) -> str:
    """A setting's value as typed: text bare, numbers without the double's `.0`
    (Struct and Value hold every number as a double), the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value)


def _flatten_message(msg: Message, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        path = prefix + field.name
        if field.message_type is not None and not field.is_repeated:
            if msg.HasField(field.name):
                out += _flatten_message(value, path + ".")
        elif field.enum_type is not None:
            if value:
                out.append((path, enum_word(field.enum_type, value)))
        elif value or field.name.endswith("_set"):  # unset scalars say nothing; "not set" does
            out.append((path, value))
    return out


def _flatten_struct(struct: struct_pb2.Struct, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in json_format.MessageToDict(struct).items():
        if isinstance(value, dict) and value:
            inner = struct_pb2.Struct()
            inner.update(value)
            out += _flatten_struct(inner, f"{prefix}{key}.")
        else:
            out.append((prefix + key, value))
    return out


def notices(out: Stream, items: Iterable[provider_pb2.Notice]) -> None:
    for n in items:
        out.print(f"note: {n.field + ': ' if n.field else ''}{n.message}")


def event_table(out: Stream, events: Sequence[ProviderEvent]) -> None:
    rows = []
    for e in events:
        kind = enum_word(ProviderEvent.Type.DESCRIPTOR, e.type)
        if e.type == ProviderEvent.TYPE_STATE_CHANGED:
            after = state_word(e.state)
            before = state_word(e.previous_state) if e.previous_state else "new"
            what: Cell = (f"{before} -> {after} ({enum_word(Provider.StateCause.DESCRIPTOR, e.state_cause)})", after)
        else:
            code = enum_word(Check.ErrorCode.DESCRIPTOR, e.error_code) if e.error_code else ""
            what = " ".join(x for x in (e.check_id, code) if x)
        rows.append([when(e.event_time), kind, what, str(e.count) if e.count > 1 else "", e.reason])
    table(out, ["TIME", "EVENT", "STATE / CHECK", "COUNT", "REASON"], rows, right=frozenset({3}), fit_last=True)


# ------------------------------------------------------------------ mail
def outbound_table(out: Stream, messages: Sequence[OutboundMessage]) -> None:
    rows = []
    for m in messages:
        state = enum_word(OutboundMessage.State.DESCRIPTOR, m.state)
        rows.append([m.name.removeprefix("outboundMessages/"), (state, state), when(m.create_time),
                     ", ".join([*m.to, *m.cc, *m.bcc]), m.subject])
    table(out, ["ID", "STATE", "CREATED", "TO", "SUBJECT"], rows, fit_last=True)


def outbound_details(out: Stream, m: OutboundMessage) -> None:
    state = enum_word(OutboundMessage.State.DESCRIPTOR, m.state)
    pairs: list[tuple[str, Cell]] = [
        ("name", m.name), ("provider", m.provider), ("state", (state, state)), ("message id", m.message_id),
        ("to", ", ".join(m.to)), ("cc", ", ".join(m.cc)), ("bcc", ", ".join(m.bcc)), ("subject", m.subject),
        ("attachments", ", ".join(f"{a.filename} ({a.size_bytes} bytes)" for a in m.attachments)),
        ("size", f"{m.size_bytes} bytes"), ("attempts", str(m.attempts)),
        ("created", when(m.create_time)), ("sent", when(m.sent_time))]
    if m.state in (OutboundMessage.STATE_QUEUED, OutboundMessage.STATE_RETRYING):
        pairs.append(("next attempt", when(m.next_attempt_time)))
    if m.HasField("last_error"):
        e = m.last_error
        pairs.append(("last error", (f"{e.smtp_code} " if e.smtp_code else "") + e.message
                      + (" (transient)" if e.transient else "")))
    keyvalues(out, pairs)


def inbound_line(m: InboundMessage) -> str:
    """One received message on one line, as `inbound tail` prints it."""
    return "  ".join([when(m.receive_time), m.name.removeprefix("inboundMessages/"), m.campaign,
                      ", ".join(getattr(m, "from")) or "-", truncate(m.subject, 200) or "-"])


def inbound_table(out: Stream, messages: Sequence[InboundMessage]) -> None:
    rows = []
    for m in messages:
        state = enum_word(InboundMessage.State.DESCRIPTOR, m.state)
        rows.append([m.name.removeprefix("inboundMessages/"), (state, state), when(m.receive_time), m.campaign,
                     ", ".join(getattr(m, "from")), m.subject])
    table(out, ["ID", "STATE", "RECEIVED", "CAMPAIGN", "FROM", "SUBJECT"], rows, fit_last=True)


def inbound_details(out: Stream, m: InboundMessage) -> None:
    state = enum_word(InboundMessage.State.DESCRIPTOR, m.state)
    keyvalues(out, [
        ("name", m.name), ("provider", m.provider), ("campaign", m.campaign), ("state", (state, state)),
        ("message id", m.message_id), ("from", ", ".join(getattr(m, "from"))), ("to", ", ".join(m.to)),
        ("cc", ", ".join(m.cc)), ("reply to", ", ".join(m.reply_to)), ("subject", m.subject),
        ("date", when(m.date)), ("received", when(m.receive_time)), ("deliveries", str(m.delivery_count)),
        ("automatic", "yes" if m.automatic else "no"), ("size", f"{m.size_bytes} bytes"
                                                          + (" (over the limit: headers only)" if m.oversized else "")),
        ("attachments", ", ".join(f"{a.filename or '-'} ({a.content_type}, {a.size_bytes} bytes)"
                                  for a in m.attachments)),
        ("conversation", m.conversation_id)])
    for defect in m.parse_defects:
        out.print(f"note: {defect}")
    if m.text_body or m.html_body:
        out.print()
        out.print(m.text_body if m.text_body else m.html_body)


# ------------------------------------------------------------------ validation
def report(out: Stream, rep: validation_pb2.ValidationReport) -> None:
    rows = []
    for c in rep.checks:
        outcome = enum_word(Check.Outcome.DESCRIPTOR, c.outcome)
        code = enum_word(Check.ErrorCode.DESCRIPTOR, c.error_code) if c.error_code else ""
        ms = f"{c.duration.ToNanoseconds() / 1e6:.0f}"
        rows.append([c.id, (outcome, outcome), code, ms, " ".join(c.server_message.split())])
    table(out, ["CHECK", "RESULT", "CODE", "TIME ms", "SERVER SAID"], rows, right=frozenset({3}))


def verdict(out: Stream, rep: validation_pb2.ValidationReport) -> None:
    failed = sum(c.outcome == Check.OUTCOME_FAILED for c in rep.checks)
    if rep.ok:
        out.print(out.paint("OK", "PASSED") + f": {len(rep.checks)} check(s) passed or skipped")
    else:
        out.print(out.paint("FAILED", "FAILED") + f": {failed} of {len(rep.checks)} check(s) failed")


# ------------------------------------------------------------------ drivers
def driver_table(out: Stream, drivers: Sequence[driver_pb2.Driver]) -> None:
    table(out, ["TYPE", "NAME", "CAN", "SOURCE"],
          [[d.type, d.display_name, _capabilities(d), d.source] for d in drivers])


def driver_details(out: Stream, d: driver_pb2.Driver) -> None:
    keyvalues(out, [("type", d.type), ("name", d.display_name), ("about", d.description),
                    ("can", _capabilities(d)), ("source", d.source)])
    out.print()
    rows = []
    for f in d.settings:
        kind = enum_word(driver_pb2.SettingField.Kind.DESCRIPTOR, f.kind).lower()
        if f.kind == driver_pb2.SettingField.KIND_INTEGER and (f.minimum or f.maximum):
            kind += f" {f.minimum}-{f.maximum}"
        if f.secret:
            kind += ", secret"
        required = "yes" if f.required else " and ".join(
            f"when {c.field}={json.dumps(json_format.MessageToDict(c.equals))}" for c in f.required_when)
        default = plain(json_format.MessageToDict(f.default_value)) if f.HasField("default_value") else ""
        rows.append([f.path, kind, required, default, "|".join(f.choices), f.label])
    table(out, ["PATH", "KIND", "REQUIRED", "DEFAULT", "CHOICES", "LABEL"], rows)


def _capabilities(d: driver_pb2.Driver) -> str:
    c = d.capabilities
    return ", ".join(word for word, on in (("send", c.send), ("receive", c.receive),
                                           ("oauth", c.oauth)) if on)


# ------------------------------------------------------------------ errors
def error(out: Stream, err: MailgateError, server: str) -> None:
    headline = str(err)
    if err.violations and all(d in err.message for d in err.violations.values()):
        # The message only strings the violations together; they follow one per line.
        n = len(err.violations)
        headline = headline.removesuffix(err.message) + f"{n} invalid field{'s' if n > 1 else ''}"
    out.print(f"error: {headline}")
    for path, description in err.violations.items():
        out.print(f"  {path}: {description}")
    if err.retry_delay:
        out.print(f"  retry in {err.retry_delay:.0f} s")
    if err.report is not None and err.report.checks:
        out.print()
        report(out, err.report)
    if err.code_name == "UNAVAILABLE":
        out.print(f"hint: no mailgate answers at {server}; start one with `mailgate serve`, "
                  "or point --server (or MAILGATE_SERVER) at it")
    if err.code_name == "UNAUTHENTICATED":
        out.print("hint: give an API token in MAILGATE_TOKEN or MAILGATE_TOKEN_FILE; a server writes its "
                  "administrator token to mailgate.token beside its key file")


def error_json(err: MailgateError) -> str:
    return json.dumps({
        "code": err.code_name, "reason": err.reason, "message": err.message,
        "metadata": err.metadata, "violations": err.violations,
        "report": json_format.MessageToDict(err.report) if err.report is not None else None,
        "retry_delay": err.retry_delay}, indent=2)
