"""The outgoing MIME message, built with the standard library's email package.

Pure functions: no I/O, no gRPC. `check_draft` says what is wrong with a request
(as violations named by field path); `compose` turns a checked draft into the bytes
handed to SMTP. Headers are always built from header objects (Address, Group,
parsed message ids) and folded and encoded by the email package, never glued by hand:
that is what keeps a subject or a display name from smuggling in a header, and what
encodes non-ASCII text correctly (RFC 2047 words, RFC 2231 filenames).

Choices worth knowing:
- The message is 7-bit clean: bodies are utf-8 with quoted-printable or base64
  (whichever the email package finds shorter), so no server needs 8BITMIME or SMTPUTF8.
  Hence an address with a non-ASCII local part is refused; a non-ASCII domain is
  sent in its ASCII (IDNA) form.
- Lines end in CRLF and are at most 998 octets (policy SMTP folds at 78 where it can).
- With neither To nor Cc (Bcc only), To is `undisclosed-recipients:;`, as mail
  clients do; a message without To scores as spam.
- Bcc never appears in the headers: those addresses travel in the envelope only
  (`envelope_recipients`).

Speed: this bypasses email.message.EmailMessage and its generator
(email.generator.BytesGenerator) for the headers and for a single text part.
SendEmail composes every message on its hot path, and the plain way costs several
times more (bench/compose.py prints both). The email package still parses, encodes
and folds everything that comes from a caller, but nothing it produced is made
twice. Addresses are parsed once per distinct entry (a bounded cache); the From,
To, Cc and Reply-To fields are folded once per distinct value (a provider's From
and Reply-To once); the message is written header by header instead of through an
EmailMessage and its generator, and a single text part is encoded by the very
function set_content uses. The only lines written directly are Date and
Message-ID, values mailgate made itself, and only when they are plain ASCII that
needs no folding (what the email package would write unchanged). The result is
byte for byte the plain EmailMessage way (mailgate.testing.oracles.compose_reference;
tests/test_compose.py compares them on a corpus of drafts).
"""
from __future__ import annotations

import email.contentmanager
import email.errors
import email.policy
import functools
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email import _header_value_parser as _hvp
from email.headerregistry import Address, Group, HeaderRegistry, MessageIDHeader
from email.message import MIMEPart
from email.utils import format_datetime, make_msgid
from typing import Callable, TypeVar

from email_validator import EmailNotValidError, validate_email

from mailgate.drivers.addresses import address_problem

from .. import limits
from ..errors import Violations
from ..message_ids import normalize_message_id

# References keeps the first id and the most recent ones (RFC 5322 3.6.4 lets it
# grow without bound; long chains are trimmed in the middle, as mail clients do).
MAX_REFERENCES = 20

_NO_LINE_BREAKS = "must not contain line breaks (CR or LF)"
_NO_CONTROLS = "must not contain control characters or line separators"
_ONE_ADDRESS = "must be one address, like jane@example.test or Jane Doe <jane@example.test>"

# Everything str.splitlines() breaks on: the email package refuses all of them in a
# header value, so they are refused here first, as the caller's mistake.
_LINE_BREAKS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_CONTROLS = frozenset(chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]) - {"\t"}
# RFC 2045 token: printable ASCII except space and tspecials.
_TOKEN = r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+"
_CONTENT_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})")
# Reply prefixes that mean "already a reply": Re:, RE:, re :, Re[2]:.
_REPLY_PREFIX = re.compile(r"\s*re\s*(?:\[\d+\]\s*)?:", re.IGNORECASE)


@dataclass(frozen=True)
class AttachmentIn:
    filename: str
    content_type: str  # "type/subtype"; empty means application/octet-stream
    data: bytes


@dataclass(frozen=True)
class Draft:
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    subject: str = ""
    text_body: str = ""
    html_body: str = ""
    attachments: tuple[AttachmentIn, ...] = ()


@dataclass(frozen=True)
class Thread:
    """What the answered message contributes when active_reference is on."""

    message_id: str              # "<id@host>" of the message answered
    references: tuple[str, ...]  # its own References chain (oldest first), without itself


@dataclass(frozen=True)
class Sender:
    account: str                 # the provider's mailbox address (From address, envelope sender)
    from_name: str = ""
    reply_to: tuple[str, ...] = ()


# --- request checks ------------------------------------------------------------------

def check_limits(draft: Draft, *, max_bytes: int, max_recipients: int = limits.DEFAULT_MAX_RECIPIENTS,
                 v: Violations) -> None:
    """Appends to `v` what of `draft` is over a limit: counts, lengths, the size. Cheap
    (no parsing): checked before anything else is done with the draft. `max_bytes` and
    `max_recipients` <= 0 mean no limit."""
    count = len(draft.to) + len(draft.cc) + len(draft.bcc)
    if 0 < max_recipients < count:
        v.add("recipients", f"at most {max_recipients:,} recipients (to, cc and bcc together), got {count:,}")
    else:
        for name in ("to", "cc", "bcc"):
            for i, entry in enumerate(getattr(draft, name)):
                if len(entry) > limits.RECIPIENT_ENTRY:
                    v.add(f"{name}[{i}]", limits.too_long(limits.RECIPIENT_ENTRY, len(entry)))
    if len(draft.subject) > limits.HEADER_TEXT:
        v.add("subject", limits.too_long(limits.HEADER_TEXT, len(draft.subject)))
    if len(draft.attachments) > limits.ATTACHMENTS:
        v.add("attachments", f"at most {limits.ATTACHMENTS} attachments, got {len(draft.attachments):,}")
    for i, a in enumerate(draft.attachments[:limits.ATTACHMENTS]):
        if len(a.filename) > limits.FILENAME:
            v.add(f"attachments[{i}].filename", limits.too_long(limits.FILENAME, len(a.filename)))
        if len(a.content_type) > limits.CONTENT_TYPE:
            v.add(f"attachments[{i}].content_type", limits.too_long(limits.CONTENT_TYPE, len(a.content_type)))
    if max_bytes > 0 and (size := estimated_size(draft)) > max_bytes:
        v.add("size", f"the message would be about {_human(size)} ({size:,} bytes), over the "
                      f"limit of {_human(max_bytes)} ({max_bytes:,} bytes)")


def check_draft(draft: Draft, *, max_bytes: int, max_recipients: int = limits.DEFAULT_MAX_RECIPIENTS,
                v: Violations) -> None:
    """Appends every violation of `draft` to `v`; raises nothing itself. Its limits
    first (check_limits): with one exceeded, nothing is parsed."""
    before = len(v.items)
    check_limits(draft, max_bytes=max_bytes, max_recipients=max_recipients, v=v)
    if len(v.items) > before:
        return
    bad = 0
    for name in ("to", "cc", "bcc"):
        for i, entry in enumerate(getattr(draft, name)):
            if problem := entry_problem(entry):
                v.add(f"{name}[{i}]", problem)
                bad += 1
            if bad == limits.VIOLATIONS - 1:  # what an answer can list: the rest are not parsed
                v.add("recipients", f"the first {bad} bad entries are named; the ones after them were not checked")
                break
        if bad == limits.VIOLATIONS - 1:
            break
    if not (draft.to or draft.cc or draft.bcc):
        v.add("recipients", "give at least one of to, cc, bcc")
    if problem := text_problem(draft.subject):
        v.add("subject", problem)
    if not (draft.text_body or draft.html_body or draft.attachments):
        v.add("text_body", "give a text or an HTML body (or both), or an attachment")
    for i, a in enumerate(draft.attachments):
        if not a.filename.strip():
            v.add(f"attachments[{i}].filename", "required")
        elif problem := text_problem(a.filename):
            v.add(f"attachments[{i}].filename", problem)
        if problem := _content_type_problem(a.content_type):
            v.add(f"attachments[{i}].content_type", problem)


T = TypeVar("T")

# Entries longer than this are not remembered (a cache of client input stays small).
_CACHEABLE = 512


def _memo(fn: Callable[[str], T]) -> Callable[[str], T]:
    """`fn` (pure, of one string) remembering its last 4096 answers; exceptions are
    not remembered. Parsing an address costs ~50 µs and one message asks several
    times (the checks, the header, the envelope); a contact center writes to the same
    people and from the same accounts all day."""
    cached = functools.lru_cache(maxsize=4096)(fn)

    @functools.wraps(fn)
    def call(entry: str) -> T:
        return cached(entry) if len(entry) <= _CACHEABLE else fn(entry)
    call.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return call


@_memo
def entry_problem(entry: str) -> str | None:
    """Why `entry` is not one recipient ("jane@example.test" or
    "Jane Doe <jane@example.test>"), or None."""
    if len(entry) > limits.RECIPIENT_ENTRY:
        return limits.too_long(limits.RECIPIENT_ENTRY, len(entry))
    if problem := text_problem(entry):
        return problem
    if not entry.strip():
        return "empty; give an address or leave the entry out"
    try:
        address = _parse_entry(entry)
    except ValueError as e:
        return str(e)
    if len(address.addr_spec) > limits.ADDRESS:
        return f"not a valid email address: {limits.too_long(limits.ADDRESS, len(address.addr_spec))}"
    if problem := address_problem(address.addr_spec):
        return f"{limits.shown(address.addr_spec)} is not a valid email address: {problem}"
    if not address.username.isascii():
        # It would need SMTPUTF8 end to end; mailgate sends 7-bit mail only.
        return f"{limits.shown(address.addr_spec)}: addresses with non-ASCII characters before the @ are not supported"
    return None


def text_problem(value: str) -> str | None:
    if "\r" in value or "\n" in value:
        return _NO_LINE_BREAKS
    if any(c in _LINE_BREAKS or c in _CONTROLS for c in value):
        return _NO_CONTROLS
    return None


def _content_type_problem(value: str) -> str | None:
    if not value:
        return None  # application/octet-stream
    if problem := text_problem(value):
        return problem
    m = _CONTENT_TYPE.fullmatch(value.strip())
    if not m:
        return f"must be type/subtype without parameters, like application/pdf; got {limits.shown(value)}"
    if m.group(1).lower() in ("multipart", "message"):
        # Attachments go out in base64, which RFC 2046 forbids for composite types.
        return f"{value!r} cannot be attached; send it as application/octet-stream"
    return None


@_memo
def _parse_entry(entry: str) -> Address:
    """The one Address in `entry`; ValueError when it is not exactly one address."""
    try:
        header = _HEADERS("to", entry)
    except Exception:  # the stdlib parser trips (IndexError, AttributeError) on some garbage
        raise ValueError(_ONE_ADDRESS) from None
    defects = [d for d in header.defects if not isinstance(d, email.errors.NonASCIILocalPartDefect)]
    if defects or len(header.groups) != 1 or header.groups[0].display_name is not None \
            or len(header.addresses) != 1:
        raise ValueError(_ONE_ADDRESS)
    return header.addresses[0]


@_memo
def _header_address(entry: str) -> Address:
    """`entry` as an Address fit for a 7-bit header: domain in its IDNA form."""
    if problem := entry_problem(entry):
        raise ValueError(f"{entry!r}: {problem}")
    address = _parse_entry(entry)
    return Address(address.display_name, address.username, _ascii_domain(address.domain))


def _ascii_domain(domain: str) -> str:
    if domain.isascii():
        return domain
    # The same library (and flags) as address_problem, so both agree on the IDNA form.
    try:
        return validate_email(f"x@{domain}", check_deliverability=False,
                              globally_deliverable=False, test_environment=True).ascii_domain
    except EmailNotValidError as e:
        raise ValueError(f"{domain!r} is not a valid domain: {e}") from None


def addr_spec(entry: str) -> str:
    """The bare ASCII address of a recipient entry ("Jane <jane@exämple.test>" ->
    "jane@xn--exmple-cua.test"), for the SMTP envelope. ValueError when invalid."""
    return _header_address(entry).addr_spec


def envelope_recipients(draft: Draft) -> tuple[str, ...]:
    """RCPT TO addresses: to, cc and bcc, in that order, each once."""
    seen: dict[str, str] = {}
    for entry in (*draft.to, *draft.cc, *draft.bcc):
        spec = addr_spec(entry)
        seen.setdefault(spec.lower(), spec)
    return tuple(seen.values())


def estimated_size(draft: Draft) -> int:
    """An upper-bound-ish size of the composed message, without composing it:
    attachments in base64, bodies at quoted-printable's worst, headers generously."""
    size = 2048  # From, Date, Message-ID, References, MIME headers and boundaries
    for entry in (*draft.to, *draft.cc):
        size += 3 * len(entry.encode()) + 4  # RFC 2047 words may double a display name
    size += _base64_size(len(draft.subject.encode())) + 64
    for body in (draft.text_body, draft.html_body):
        if body:
            n = len(body.encode())
            size += 3 * n + 3 * n // 73 + 256  # "=XX" per byte, soft line breaks, part headers
    for a in draft.attachments:
        size += _base64_size(len(a.data)) + 3 * len(a.filename.encode()) + 256
    return size


def recipient_chars(draft: Draft) -> int:
    """The length of every recipient entry together: what checking them costs."""
    return sum(len(e) for e in (*draft.to, *draft.cc, *draft.bcc))


def payload_size(draft: Draft) -> int:
    """About the bytes the draft itself holds: its bodies and attachments."""
    return len(draft.text_body) + len(draft.html_body) + sum(len(a.data) for a in draft.attachments)


def _base64_size(n: int) -> int:
    chars = (n + 2) // 3 * 4
    return chars + (chars + 75) // 76 * 2  # lines of 76 characters and CRLF


def _human(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MB".replace(".0 MB", " MB")
    return f"{max(1, round(n / 1024))} KB"


# --- message ids, subjects ------------------------------------------------------------

def new_message_id(account: str) -> str:
    """A fresh "<...@domain>" on the account's domain (in its ASCII form)."""
    domain = account.rpartition("@")[2]
    return make_msgid(domain=_ascii_domain(domain))


def reply_subject(subject: str) -> str:
    """`subject` with "Re: " in front, unless it is already a reply: a leading "Re:"
    in any case, with optional spaces or a counter ("RE: x", "re:x", "Re [2]: x")
    stays as it is. Other prefixes are not recognised: "Fwd: x" -> "Re: Fwd: x",
    "AW: x" -> "Re: AW: x"."""
    if _REPLY_PREFIX.match(subject):
        return subject
    return f"Re: {subject.strip()}".rstrip()


# --- the message ----------------------------------------------------------------------

def _parse_msg_id_list(value: str) -> _hvp.TokenList:
    """Parse tree of space-separated msg-ids, so that References folds between ids.
    (The email package has no References header type: as unstructured text, a long
    id would be cut into RFC 2047 words and threading lost.)"""
    tree = _hvp.MessageID()
    while value:
        if value[0] in _hvp.CFWS_LEADER:
            token, value = _hvp.get_cfws(value)
        else:
            token, value = _hvp.get_msg_id(value)
        tree.append(token)
    return tree


class _MessageIDListHeader(MessageIDHeader):
    value_parser = staticmethod(_parse_msg_id_list)


class _CachedHeaderRegistry(HeaderRegistry):
    """The standard registry builds a new header class on every lookup (a `type()`
    call per header per message, a quarter of compose's time); the classes never
    change, so build each once."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}

    def map_to_type(self, name: str, cls: type) -> None:
        super().map_to_type(name, cls)
        self._classes.clear()

    def __getitem__(self, name: str) -> type:
        cls = self._classes.get(name)
        if cls is None:
            cls = self._classes[name] = super().__getitem__(name)
        return cls


_HEADERS = _CachedHeaderRegistry()
_HEADERS.map_to_type("in-reply-to", MessageIDHeader)
_HEADERS.map_to_type("references", _MessageIDListHeader)
# SMTP: CRLF, fold at 78. cte_type 7bit: non-ASCII bodies go quoted-printable or
# base64 rather than 8bit, so nothing depends on the server's 8BITMIME.
POLICY = email.policy.SMTP.clone(cte_type="7bit", header_factory=_HEADERS)
_UNDISCLOSED = POLICY.fold_binary("To", _HEADERS("To", Group("undisclosed-recipients")))
_MIME_VERSION = POLICY.fold_binary("MIME-Version", _HEADERS("MIME-Version", "1.0"))


def compose(draft: Draft, sender: Sender, *, message_id: str, date: datetime,
            thread: Thread | None = None) -> bytes:
    """The message as sent: CRLF line ends, 7-bit. `draft` must have passed
    check_draft; anything unusable (a bad address, a line break in a header value)
    raises ValueError rather than producing a broken message. `date` must be aware.

    Byte for byte the EmailMessage way (mailgate.testing.oracles.compose_reference;
    but for a multipart boundary, random in both), written header by header from
    cached folds (see the module's notes on speed)."""
    _check_compose_input(draft, sender, message_id, date)
    head = [_from_field(sender.account, sender.from_name)]
    if draft.to:
        head.append(_address_field("To", draft.to))
    elif not draft.cc:
        head.append(_UNDISCLOSED)
    if draft.cc:
        head.append(_address_field("Cc", draft.cc))
    # draft.bcc: envelope only, by design.
    if sender.reply_to:
        head.append(_address_field("Reply-To", sender.reply_to))
    head.append(_fold("Subject", reply_subject(draft.subject) if thread else draft.subject))
    head.append(_fold_ours("Date", format_datetime(date.astimezone(timezone.utc))))
    head.append(_fold_ours("Message-ID", message_id))
    if thread:
        answered = normalize_message_id(thread.message_id)
        if answered is None:
            raise ValueError(f"{thread.message_id!r} is not a Message-ID")
        head.append(_fold("In-Reply-To", answered))
        head.append(_fold("References", " ".join(_references(thread.references, answered))))
    head.append(_MIME_VERSION)
    if not draft.attachments and (encode := _text_encoder()) is not None and \
            not (draft.text_body and draft.html_body):
        # One text part: its two headers are constants, its body what set_content makes.
        subtype, body = ("html", draft.html_body) if draft.html_body else ("plain", draft.text_body)
        cte, payload = encode(body, "utf-8", None, POLICY)
        head.append(_text_part_headers(subtype, cte))
        head.append(b"\r\n")
        # The generator's line ends: payloads come with "\n" alone (a plain replace, ~15x
        # faster than the generator's regular expression); anything else takes the rule.
        crlf = payload.replace("\n", "\r\n") if "\r" not in payload else _NEWLINES.sub("\r\n", payload)
        head.append(crlf.encode("ascii"))
        return b"".join(head)
    if draft.attachments:
        top = MIMEPart(policy=POLICY)
        top.make_mixed()
        if draft.text_body or draft.html_body:
            body = MIMEPart(policy=POLICY)
            _set_body(body, draft)
            top.attach(body)
        for a in draft.attachments:
            top.attach(_attachment(a))
    else:
        top = MIMEPart(policy=POLICY)
        _set_body(top, draft)
    # The generator writes the top part's headers (Content-Type, boundary) and its body,
    # just as it would after the headers above in an EmailMessage.
    return b"".join(head) + top.as_bytes(policy=POLICY)


def _check_compose_input(draft: Draft, sender: Sender, message_id: str, date: datetime) -> None:
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("date must be timezone-aware")
    for value in (draft.subject, sender.from_name, *(a.filename for a in draft.attachments)):
        if problem := text_problem(value):
            raise ValueError(f"{value!r} {problem}")
    for a in draft.attachments:
        if problem := _content_type_problem(a.content_type):
            raise ValueError(f"attachment {a.filename!r}: {problem}")
    if normalize_message_id(message_id) != message_id:
        raise ValueError(f"{message_id!r} is not a Message-ID")


def _fold(name: str, value: object) -> bytes:
    """One header line (folded), exactly as the generator writes it."""
    return POLICY.fold_binary(name, _HEADERS(name, value))


@functools.lru_cache(maxsize=256)
def _from_field(account: str, from_name: str) -> bytes:
    """The From line of a provider: parsed and encoded once."""
    address = _header_address(account)
    return _fold("From", Address(from_name.strip(), address.username, address.domain))


def _address_field(name: str, entries: tuple[str, ...]) -> bytes:
    if sum(len(e) for e in entries) <= 4 * _CACHEABLE:
        return _address_field_cached(name, tuple(entries))
    return _fold(name, [_header_address(e) for e in entries])


@functools.lru_cache(maxsize=4096)
def _address_field_cached(name: str, entries: tuple[str, ...]) -> bytes:
    return _fold(name, [_header_address(e) for e in entries])


# Values mailgate generates itself (a formatted date, a checked Message-ID): printable
# ASCII, one token or words separated by single spaces. Such a value on a line of at
# most 78 characters is what the email package writes unchanged; anything else goes
# through it.
_PLAIN_VALUE = re.compile(r"[!-~]+(?: [!-~]+)*")


def _fold_ours(name: str, value: str) -> bytes:
    if len(name) + 2 + len(value) <= POLICY.max_line_length and "=?" not in value \
            and _PLAIN_VALUE.fullmatch(value):
        return f"{name}: {value}\r\n".encode("ascii")
    return _fold(name, value)


@functools.lru_cache(maxsize=16)
def _text_part_headers(subtype: str, cte: str) -> bytes:
    """Content-Type and Content-Transfer-Encoding of a utf-8 text part, as
    set_content writes them."""
    part = MIMEPart(policy=POLICY)
    part.set_content("x", subtype=subtype, charset="utf-8", cte=cte)
    return b"".join(POLICY.fold_binary(k, v) for k, v in part.raw_items())


def _text_encoder() -> Callable[..., tuple[str, str]] | None:
    """The email package's own text encoder (what set_content calls: picks 7bit,
    quoted-printable or base64 and encodes); None if this Python has no such function."""
    return getattr(email.contentmanager, "_encode_text", None)


_NEWLINES = re.compile(r"\r\n|\r|\n")  # the generator's line-end rule (email.generator.NLCRE)


def _references(chain: tuple[str, ...], answered: str) -> list[str]:
    """chain + answered: ids the email package cannot carry are dropped (they come
    from other people's mail), repeats removed, trimmed to MAX_REFERENCES keeping the
    first (the conversation's root) and the latest."""
    ids: list[str] = []
    for value in chain:
        mid = normalize_message_id(value)
        if mid and mid != answered and mid not in ids:
            ids.append(mid)
    ids.append(answered)
    if len(ids) > MAX_REFERENCES:
        ids = ids[:1] + ids[-(MAX_REFERENCES - 1):]
    return ids


def _set_body(part: MIMEPart, draft: Draft) -> None:
    """text/plain, text/html, or multipart/alternative with the text first (clients
    show the last alternative they understand, so the richest goes last)."""
    if draft.text_body and draft.html_body:
        part.make_alternative()
        for body, subtype in ((draft.text_body, "plain"), (draft.html_body, "html")):
            alternative = MIMEPart(policy=POLICY)
            alternative.set_content(body, subtype=subtype, charset="utf-8")
            part.attach(alternative)
    elif draft.html_body:
        part.set_content(draft.html_body, subtype="html", charset="utf-8")
    else:
        part.set_content(draft.text_body, subtype="plain", charset="utf-8")


def _attachment(a: AttachmentIn) -> MIMEPart:
    maintype, _, subtype = (a.content_type.strip().lower() or "application/octet-stream").partition("/")
    part = MIMEPart(policy=POLICY)
    # bytes -> base64; a non-ASCII filename becomes filename*=utf-8''... (RFC 2231).
    part.set_content(a.data, maintype, subtype, disposition="attachment", filename=a.filename)
    return part
