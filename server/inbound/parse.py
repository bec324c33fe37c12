"""Reading mail that arrives: pure functions, no I/O, and none of them ever raises.

Two levels, because parsing costs real CPU (figures from bench/parse.py in docs/performance.md):

- `parse_envelope` runs on the hot path, before a message is committed to the queue.
  It reads the header section only (up to the first empty line), with a hand-rolled
  header split and the standard library's small helpers (getaddresses,
  parsedate_to_datetime), never the MIME parser: ~0.1 ms for a 10 KB message, against
  ~1.5 ms for `email.message_from_bytes(policy=default)` alone and ~3 ms for that
  parse plus reading headers, bodies and attachments its way. A 30 MB message costs
  it no more than a 3 KB one, apart from hashing the bytes (~25 ms).
- `parse_body` runs when a consumer asks for the content (the attachments' decoded
  content too, when asked: one parse either way). It uses the email package's compat32 parser (~0.2 ms for 10 KB, 7x cheaper than
  policy.default, and tolerant of anything) and walks the tree itself, so that a
  broken part costs that part, not the message: ~0.3 ms in all for 10 KB, ~1 s for
  a 30 MB attachment.

The raw bytes are the truth (the queue keeps them); everything here is a best-effort
reading of them. What was wrong is said in `defects`, for operators.

Strings returned are always valid Unicode without NUL (NUL becomes U+FFFD): they
go into protobuf strings and PostgreSQL text, which refuse lone surrogates and NUL.

8-bit bytes where only ASCII belongs (raw UTF-8 or Latin-1 in headers, bodies
without a charset) are read as UTF-8 when they are valid UTF-8, else as
windows-1252 (what browsers do for "iso-8859-1" and "us-ascii" too; it differs from
Latin-1 only in C1 control codes that no text uses), else Latin-1.

When is a message automatic (`Envelope.automatic`, the reason in `automatic_reason`),
so that consumers can avoid answering robots and looping:
- Auto-Submitted with any value but "no" (RFC 3834: auto-replied, auto-generated, ...);
- Content-Type multipart/report (delivery-status bounces, read receipts, feedback
  reports);
- a null sender, Return-Path <> (bounces; RFC 3834 asks auto-replies to use it too);
- From mailer-daemon@ or postmaster@ (bounces from servers that set nothing else);
- Precedence bulk, junk, list or auto_reply;
- X-Autoreply, X-Autorespond or X-Autoresponder present (other than "no"/"false"/"0");
- X-Auto-Response-Suppress naming All, OOF or AutoReply (Exchange sets it on its own
  out-of-office replies and automated systems on their mail; "DR, RN, NRN" alone,
  which only turns off receipts, does not count);
- List-Id or List-Unsubscribe present (mailing lists, newsletters: RFC 3834 2 says
  not to answer them);
- a Subject that starts with an out-of-office prefix and a colon ("Automatic reply:",
  "Out of Office AutoReply:", "Autoreply:", "Réponse automatique:", ...), for
  old responders that set none of the headers. Prefix only: "Re: out of office" or
  a subject that merely mentions it is a person's mail.
"""
from __future__ import annotations

import binascii
import codecs
import email.errors
import functools
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import Message
from email.parser import BytesParser
from email.policy import Compat32, compat32
from email.utils import getaddresses, parsedate_to_datetime
from typing import Iterator

# compose's own rule for a message id, so that an id read here can be answered (put
# into In-Reply-To/References) later: Message-ID gets the full check, References ids
# (up to 100 a message) the regex only, 16 us less each; compose drops any it cannot send.
from ..message_ids import MAX_MESSAGE_ID, MSG_ID, normalize_message_id

# The header section is read up to this size; beyond it, a message is garbage or
# hostile (real headers are a few KB; a long Received chain with DKIM maybe 50 KB).
MAX_HEADER_BYTES = 256 * 1024
# In-Reply-To / References ids kept per message; a longer chain keeps its first
# (the conversation's root) and its latest ids, as compose does when sending.
MAX_REFERENCES = 100
# A multipart tree is followed this deep; below it, parts are not read (said in defects).
MAX_DEPTH = 20
# "<...>" in a header value: the candidates for message ids.
_MSG_ID_TOKEN = re.compile(r"<[^<>\s]*>")

# A header field name (RFC 5322 ftext), optionally followed by blanks (obsolete syntax).
_FIELD = re.compile(r"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
# RFC 2047 encoded word. Lenient: mailers put spaces inside Q words; "?" cannot occur
# in either encoding, so the word ends at the first "?=".
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([qQbB])\?([^?]*)\?=")
_OOO_SUBJECT = re.compile(
    r"\s*(?:automatic\s+reply|auto[- ]?reply|out\s+of\s+(?:the\s+)?office(?:\s+auto[- ]?reply)?"
    r"|r[ée]ponse\s+automatique|respuesta\s+autom[áa]tica|resposta\s+autom[áa]tica"
    r"|automatische\s+antwort|risposta\s+automatica|abwesenheitsnotiz)\s*:", re.IGNORECASE)
_AUTO_SUPPRESS = frozenset(("all", "oof", "autoreply"))
_PRECEDENCE = frozenset(("bulk", "junk", "list", "auto_reply"))
_DAEMONS = frozenset(("mailer-daemon", "postmaster"))
# What an address must look like to be returned: something either side of one "@"
# (or a bare name: MAILER-DAEMON), without blanks, controls or specials (a quoted
# local part, "john doe"@example.net, is rare enough to lose).
_ADDR = re.compile(r'[^\x00-\x20\x7f<>()",;:\\@]+(?:@[^\x00-\x20\x7f<>()",;:\\@]+)?')
# Address display names with any of these must be quoted to be read back as one address.
_SPECIALS = frozenset('()<>@,:;".[]\\')
# Labels mail carries that Python does not know, or knows as a smaller charset than
# the mail means (as browsers read them: the WHATWG Encoding standard).
_CHARSET_ALIASES = {
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949", "euc-kr": "cp949",
    "shift_jis": "cp932", "x-sjis": "cp932",
    "iso-8859-8-i": "iso-8859-8", "windows-874": "cp874", "tis-620": "cp874",
    "x-mac-roman": "mac-roman",
}
# Labels read with the UTF-8 -> windows-1252 -> Latin-1 rule rather than as declared:
# mail says us-ascii or iso-8859-1 when it means "whatever my 8-bit bytes are".
_LATIN = frozenset(("ascii", "iso8859-1", "cp1252"))  # Python's names
# Codecs Python has that are not charsets mail may choose: they can produce lone
# surrogates (the escape codecs) or cost quadratic time (punycode, idna).
_NOT_CHARSETS = frozenset(("unicode-escape", "raw-unicode-escape", "punycode", "idna", "undefined"))
# RFC 2045 type/subtype (tokens); anything else is reported as application/octet-stream.
_CONTENT_TYPE = re.compile(r"[!#$%&'*+\-.^_`{|}~0-9a-z]+/[!#$%&'*+\-.^_`{|}~0-9a-z]+")
_HTML_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


@dataclass(frozen=True)
class Envelope:
    """What the queue needs from a message, from its header section only."""

    message_id: str | None        # "<id@host>", or None when missing or unusable
    in_reply_to: tuple[str, ...]  # "<id@host>" each
    references: tuple[str, ...]   # "<id@host>" each, oldest first
    subject: str                  # decoded; "" when missing
    # Addresses as "Name <addr>" (or "addr" without a name), in the form compose's
    # Draft accepts: a name with specials is quoted, so email.utils.parseaddr splits
    # each back into (name, addr). Entries without an address are left out.
    from_: tuple[str, ...]
    to: tuple[str, ...]
    cc: tuple[str, ...]
    reply_to: tuple[str, ...]
    date: datetime | None         # aware, UTC; None when missing or unparseable. For display only.
    automatic: bool               # see the module docstring for the rules
    automatic_reason: str         # which rule, e.g. "Auto-Submitted: auto-replied"; "" when not
    content_hash: str             # sha256 hex of the raw bytes (with the Message-ID, the dedup key)
    size: int                     # bytes
    oversized: bool               # size > max_bytes
    defects: tuple[str, ...]      # what was wrong with the header section


@dataclass(frozen=True)
class AttachmentInfo:
    filename: str                 # decoded; "" when the part has none
    content_type: str             # "type/subtype", lower case
    size: int                     # decoded bytes
    content_id: str | None        # "<...>" as given, for cid: links from the HTML body
    index: int                    # its position in Body.attachments
    content: bytes | None = None  # decoded; only from parse_body(raw, with_content=True)


@dataclass(frozen=True)
class Body:
    text: str                     # the first text/plain part that is not an attachment; "" if none
    html: str                     # the first text/html part that is not an attachment, as is; "" if none
    attachments: tuple[AttachmentInfo, ...]  # every other leaf part; a message/rfc822 part is one attachment
    defects: tuple[str, ...]


# --- the envelope ---------------------------------------------------------------------

def parse_envelope(raw: bytes, *, max_bytes: int, size: int | None = None) -> Envelope:
    """The envelope of `raw`. `max_bytes` <= 0 means no size limit. `size` is the
    message's full size when `raw` holds its header section only (an oversized
    message fetched without its body, IMAP RFC822.SIZE); by default len(raw)."""
    defects: list[str] = []
    try:
        headers = _split_headers(raw, defects)
    except Exception as e:  # a bug here must not lose the message; the hash and size still count
        headers = {}
        defects.append(f"header section unreadable ({type(e).__name__})")
    size = len(raw) if size is None else size

    def get(name: str) -> str:  # the first such header, unfolded and decoded to str
        values = headers.get(name)
        return _unfold(values[0]) if values else ""

    def ids(name: str) -> tuple[str, ...]:  # from every such header: some mailers repeat them
        return _id_list(" ".join(_unfold(v) for v in headers.get(name, ())))

    subject = _safe(lambda: _one_line(decode_words(get("subject"))), "", "Subject", defects)
    message_id = _safe(lambda: _message_id(headers.get("message-id", ()), defects), None, "Message-ID", defects)
    from_ = _safe(lambda: _addresses(get("from")), (), "From", defects)
    envelope = dict(
        message_id=message_id,
        in_reply_to=_safe(lambda: ids("in-reply-to"), (), "In-Reply-To", defects),
        references=_safe(lambda: ids("references"), (), "References", defects),
        subject=subject,
        from_=from_,
        to=_safe(lambda: _addresses(*headers.get("to", ())), (), "To", defects),
        cc=_safe(lambda: _addresses(*headers.get("cc", ())), (), "Cc", defects),
        reply_to=_safe(lambda: _addresses(get("reply-to")), (), "Reply-To", defects),
        date=_safe(lambda: _date(get("date"), defects), None, "Date", defects),
    )
    reason = _safe(lambda: _clean(_automatic(get, subject, from_)), "", "automatic rules", defects)
    return Envelope(**envelope, automatic=bool(reason), automatic_reason=reason,
                    content_hash=hashlib.sha256(raw).hexdigest(), size=size,
                    oversized=max_bytes > 0 and size > max_bytes, defects=tuple(map(_clean, defects)))


def _safe(fn, default, what: str, defects: list[str]):
    """fn(), or `default` with a defect when it raises: one header's garbage (or a
    bug it trips in the standard library) costs that field only."""
    try:
        return fn()
    except Exception as e:
        defects.append(f"{what} unreadable ({type(e).__name__})")
        return default


def _split_headers(raw: bytes, defects: list[str]) -> dict[str, list[str]]:
    """{lower-case name: [raw values in order]} of the header section. Values are
    str decoded as Latin-1, so every byte survives for _text to decode properly;
    continuation lines are kept with their line break for _unfold."""
    end = _header_end(raw)
    if end >= 0:
        head = raw[:end]
    elif len(raw) > MAX_HEADER_BYTES:
        head = raw[:MAX_HEADER_BYTES]
        defects.append(f"no end of the header section in the first {MAX_HEADER_BYTES:,} bytes; the rest is not read")
    else:
        head = raw  # a message without a body, or garbage
    headers: dict[str, list[list[str]]] = {}  # name -> each occurrence's lines
    current: list[str] | None = None  # the lines of the header being read
    lines = head.decode("latin-1").split("\n")
    if lines[0].startswith("From "):  # an mbox "From " line, left on by some POP3 servers
        lines = lines[1:]
    for i, line in enumerate(lines):
        if line[:1] in (" ", "\t"):
            if current is not None:
                current.append(line)
            continue
        m = _FIELD.match(line)
        if not m:
            # Not a header and not blank: the body starts without its empty line (or
            # this is not mail at all). Readers agree: the header section ends here.
            if line.strip("\r"):
                defects.append("no header section" if i == 0 else
                               f"line {i + 1} is not a header; the header section ends there")
            break
        current = [line[m.end():]]
        headers.setdefault(m.group(1).lower(), []).append(current)
    return {name: ["\n".join(lines) for lines in values] for name, values in headers.items()}


def _header_end(raw: bytes) -> int:
    """Where the header section ends: the "\n" before the empty line that ends it (0
    when the message starts with one; -1 for none in the first MAX_HEADER_BYTES). An
    empty line follows a "\n" and is "\n" or "\r\n", whatever the line ends;
    bytes.find is many times faster than a regex here."""
    if raw[:1] == b"\n" or raw[:2] == b"\r\n":
        return 0
    crlf = raw.find(b"\n\r\n", 0, MAX_HEADER_BYTES)
    lf = raw.find(b"\n\n", 0, crlf if crlf >= 0 else MAX_HEADER_BYTES)
    return lf if lf >= 0 else crlf


def _unfold(value: str) -> str:
    """A raw header value as text: line breaks removed (RFC 5322 unfolding), 8-bit
    bytes decoded."""
    value = value.replace("\r", "").replace("\n", "")
    return _text(value) if not value.isascii() else value


def _text(latin1: str) -> str:
    """`latin1` (bytes carried in a str as Latin-1) decoded as the module docstring says."""
    data = latin1.encode("latin-1")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:  # the five bytes windows-1252 leaves undefined
        return latin1


def decode_words(value: str) -> str:
    """`value` with its RFC 2047 encoded words decoded: adjacent words joined (the
    space between them dropped, their bytes concatenated first, because senders split
    a multi-byte character across words); unknown charsets read as 8-bit text;
    a word that does not decode is left as it is."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pending: list[tuple[str, bytes]] = []  # (charset, bytes) of adjacent encoded words

    def flush() -> None:
        i = 0
        while i < len(pending):  # runs of the same charset decode together
            charset, run = pending[i][0], [pending[i][1]]
            while i + 1 < len(pending) and pending[i + 1][0] == charset:
                i += 1
                run.append(pending[i][1])
            out.append(_decode(b"".join(run), charset)[0])
            i += 1
        pending.clear()

    pos = 0
    for m in _ENCODED_WORD.finditer(value):
        between = value[pos:m.start()]
        if between and not (pending and between.isspace()):
            flush()
            out.append(between)
        pos = m.end()
        charset, encoding, text = m.group(1).partition("*")[0].lower(), m.group(2).lower(), m.group(3)
        try:
            if encoding == "q":
                data = binascii.a2b_qp(text.encode("latin-1"), header=True)
            else:
                data = binascii.a2b_base64(text.encode("latin-1") + b"===")  # padding forgiven
        except (binascii.Error, UnicodeEncodeError, ValueError):
            flush()
            out.append(m.group(0))
            continue
        pending.append((charset, data))
    flush()
    out.append(value[pos:])
    return "".join(out)


def _message_id(values: list[str], defects: list[str]) -> str | None:
    """The first usable Message-ID (the standard library's msg["Message-ID"] is the
    first too). Several happen: a relay or a list adding its own."""
    if len(values) > 1:
        defects.append(f"{len(values)} Message-ID headers; the first usable one is used")
    for value in values:
        value = _unfold(value).strip()
        tokens = _MSG_ID_TOKEN.findall(value)
        candidate = tokens[0] if tokens else value  # "id@host" without brackets is common enough
        if candidate and (mid := normalize_message_id(candidate)):
            return mid
        defects.append(f"unusable Message-ID {value[:100]!r}")
    return None


def _id_list(value: str) -> tuple[str, ...]:
    """Usable "<id>"s in `value`, each once, in order; anything else (comments,
    "Your message of ...") is skipped."""
    ids = [t for t in dict.fromkeys(_MSG_ID_TOKEN.findall(value))
           if len(t) <= MAX_MESSAGE_ID and MSG_ID.fullmatch(t)]
    if len(ids) > MAX_REFERENCES:
        ids = ids[:1] + ids[-(MAX_REFERENCES - 1):]
    return tuple(ids)


def _addresses(*values: str) -> tuple[str, ...]:
    """Every address in the header values, as "Name <addr>" or "addr". The value is
    split into addresses before its encoded words are decoded, so that a name like
    =?utf-8?q?Doe=2C_John?= stays one name. What getaddresses makes of garbage
    (unbalanced quotes and brackets) is left out when it is not an address."""
    out = []
    for name, addr in getaddresses([_unfold(v) for v in values if v.strip()]):
        addr = addr.strip()
        if not _ADDR.fullmatch(addr):
            continue  # empty: groups' names, "undisclosed-recipients:;"; or garbage
        name = _one_line(decode_words(name))
        if name and any(c in _SPECIALS for c in name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out.append(f"{name} <{addr}>" if name else addr)
    return tuple(out)


def _date(value: str, defects: list[str]) -> datetime | None:
    if not value.strip():
        return None
    try:
        date = parsedate_to_datetime(value)
        if date.tzinfo is None:  # "-0000": UTC, origin unknown (RFC 5322 3.3)
            date = date.replace(tzinfo=timezone.utc)
        return date.astimezone(timezone.utc)
    except Exception:  # ValueError, TypeError, OverflowError near year 1 or 9999
        defects.append(f"unparseable Date {value[:100]!r}")
        return None


def _automatic(get, subject: str, from_: tuple[str, ...]) -> str:
    """Why the message is automatic ("" when it is not); the rules are in the module
    docstring, in this order."""
    if (v := get("auto-submitted").strip()) and v.split(";")[0].strip().lower() != "no":
        return f"Auto-Submitted: {v[:60]}"
    if get("content-type").strip().lower().startswith("multipart/report"):
        return "Content-Type: multipart/report"
    if get("return-path").strip() in ("<>", "< >"):
        return "null sender (Return-Path: <>)"
    for entry in from_:
        local = entry.rpartition("<")[2].rstrip(">").partition("@")[0].lower()
        if local in _DAEMONS:
            return f"From {local}"
    if (v := get("precedence").strip()).lower() in _PRECEDENCE:
        return f"Precedence: {v}"
    for name in ("x-autoreply", "x-autorespond", "x-autoresponder"):
        if (v := get(name).strip()) and v.lower() not in ("no", "false", "0"):
            return f"{name.title()}: {v[:60]}"
    v = get("x-auto-response-suppress")
    if _AUTO_SUPPRESS & {t.strip().lower() for t in v.split(",")}:
        return f"X-Auto-Response-Suppress: {v.strip()[:60]}"
    for name in ("list-id", "list-unsubscribe"):
        if get(name).strip():
            return f"{name.title()} present"
    if _OOO_SUBJECT.match(subject):
        return f"Subject {subject[:60]!r}"
    return ""


# --- text -----------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)  # bounded: hostile mail can name any number of charsets
def _codec(label: str) -> str | None:
    """Python's codec name for a charset label, or None when unknown (or not a charset)."""
    label = label.strip().strip('"').lower()
    label = _CHARSET_ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    name = info.name.replace("_", "-")
    if not getattr(info, "_is_text_encoding", True) or name in _NOT_CHARSETS:
        return None
    return name


def _decode(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """(text, defect or None). Missing, unknown, ASCII and Latin-1 labels: the 8-bit
    rule (UTF-8, else windows-1252, else Latin-1). Others: the declared charset, else
    UTF-8, else the declared charset with replacement characters (for a damaged
    "utf-8" with no valid multi-byte sequence at all: the 8-bit rule)."""
    codec = _codec(charset) if charset else None
    if codec is None or codec in _LATIN or data.isascii():
        text = _clean(_text(data.decode("latin-1")))
        if charset and codec is None and not data.isascii():
            return text, f"unknown charset {charset[:40]!r}, read as 8-bit text"
        return text, None
    for name in (codec, "utf-8"):
        try:
            text = data.decode(name)
        except (UnicodeDecodeError, LookupError):
            continue
        return _clean(text), None if name == codec else f"not valid {charset[:40]!r}, read as utf-8"
    if codec == "utf-8":
        # UTF-8 with a few damaged sequences keeps its good characters; with none at
        # all it is really 8-bit text in some single-byte charset.
        text = data.decode("utf-8", "replace")
        if text.replace("\ufffd", "").isascii():
            return _clean(_text(data.decode("latin-1"))), "not valid 'utf-8', read as 8-bit text"
        return _clean(text), "not valid 'utf-8', invalid bytes replaced"
    return _clean(data.decode(codec, "replace")), f"not valid {charset[:40]!r}, invalid bytes replaced"


def _one_line(text: str) -> str:
    """A header's text for display: line breaks (encoded words can carry them) and
    tabs become spaces, ends stripped."""
    return _clean(text.translate(_BLANKS).strip())


_BLANKS = str.maketrans("\r\n\t", "   ")


def _clean(text: str) -> str:
    """`text` fit for protobuf and PostgreSQL: NUL replaced, lone surrogates replaced."""
    if "\0" in text:
        text = text.replace("\0", "\ufffd")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


# --- the body -------------------------------------------------------------------------

class _RawHeaders(Compat32):
    """compat32, but header values come back as parsed: 8-bit bytes as surrogate
    escapes, which _header_text decodes as UTF-8 or windows-1252. (compat32 turns them
    into Header objects whose str() has replacement characters instead.)"""

    def header_fetch_parse(self, name, value):
        return value


_RAW_HEADERS = _RawHeaders()
# Writing a parsed message/rfc822 part back out: CRLF, headers not refolded.
_REWRITE = compat32.clone(linesep="\r\n", max_line_length=None)


def parse_body(raw: bytes, *, with_content: bool = False) -> Body:
    """Text, HTML and attachments of `raw`, with the attachments' decoded content when
    `with_content` (a message/rfc822 attachment comes back as a message); best effort,
    never raises."""
    defects: list[str] = []
    found = {"text": "", "html": ""}
    attachments: list[AttachmentInfo] = []
    for number, part, role in _parts(raw, defects):
        # A bug or a library trip on one part costs that part only.
        if role != "attachment":
            try:
                found[role] = _part_text(part, number, defects)
            except Exception as e:
                defects.append(f"part {number} unreadable ({type(e).__name__})")
            continue
        # Listed whatever fails: every attachment part has its index.
        data = _safe(lambda: _decoded(part, number, defects), b"", f"part {number}: content", defects)
        attachments.append(AttachmentInfo(
            filename=_safe(lambda: _filename(part), "", f"part {number}: filename", defects),
            content_type=_safe(lambda: _content_type(part), "application/octet-stream",
                               f"part {number}: Content-Type", defects),
            size=len(data),
            content_id=_safe(lambda: _header_text(part.get("content-id")), None, f"part {number}: Content-ID",
                             defects),
            index=len(attachments), content=data if with_content else None))
    return Body(text=found["text"], html=found["html"], attachments=tuple(attachments),
                defects=tuple(map(_clean, defects)))  # they quote header values


def parse_envelopes(raws: list[bytes], max_bytes: int) -> list[Envelope]:
    """parse_envelope of each: one call per batch for worker processes."""
    return [parse_envelope(raw, max_bytes=max_bytes) for raw in raws]


def parse_bodies(raws: list[bytes | None]) -> list[Body | None]:
    """parse_body of each (None for None): one call per batch for worker processes."""
    return [None if raw is None else parse_body(raw) for raw in raws]


def _parts(raw: bytes, defects: list[str]) -> Iterator[tuple[int, Message, str]]:
    """(number, part, role) of every leaf part, depth first, numbered from 1 as they
    come; role is "text", "html" (the first of each that is not an attachment) or
    "attachment"."""
    try:
        root = BytesParser(policy=_RAW_HEADERS).parsebytes(raw)
    except Exception as e:  # RecursionError on absurd nesting, MemoryError, a parser bug
        defects.append(f"MIME structure unreadable ({type(e).__name__}); no parts read")
        return
    seen: set[str] = set()  # "text", "html": found already
    number = 0
    stack: list[tuple[Message, int]] = [(root, 0)]
    while stack:
        part, depth = stack.pop()
        number += 1
        try:
            defects.extend(f"part {number}: {_defect_name(d)}" for d in part.defects)
            if part.get_content_maintype() == "multipart":
                if not part.is_multipart():
                    # No boundary, or one that never appears: the body is one blob. Read
                    # it as text, which is what it most often is.
                    defects.append(f"part {number}: {part.get_content_type()} without its parts; read as text")
                elif depth >= MAX_DEPTH:
                    defects.append(f"part {number}: multipart nested deeper than {MAX_DEPTH} levels; "
                                   "the parts inside are not read")
                    continue
                else:
                    stack.extend((child, depth + 1) for child in reversed(part.get_payload()))
                    continue
            role = _role(part, seen)
        except Exception as e:  # a library trip on one part's headers: skip that part
            defects.append(f"part {number} unreadable ({type(e).__name__})")
            continue
        yield number, part, role


def _role(part: Message, seen: set[str]) -> str:
    """"text" or "html" for the first such part that is not an attachment, else
    "attachment"."""
    disposition = part.get_content_disposition()
    if disposition == "attachment" or (part.get_filename() is not None and disposition != "inline"):
        return "attachment"
    ctype = part.get_content_type()
    if ctype == "text/html":
        role = "html"
    elif ctype == "text/plain" or part.get_content_maintype() == "multipart":  # one without parts
        role = "text"
    else:
        return "attachment"
    if role in seen:
        return "attachment"
    seen.add(role)
    return role


def _defect_name(d: email.errors.MessageDefect) -> str:
    # "CloseBoundaryNotFoundDefect" -> "close boundary not found"
    name = type(d).__name__.removesuffix("Defect")
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


def _part_text(part: Message, number: int, defects: list[str]) -> str:
    data = _decoded(part, number, defects)
    charset = part.get_param("charset")
    if isinstance(charset, tuple):  # RFC 2231 form
        charset = charset[2]
    if not charset and part.get_content_type() == "text/html":
        if m := _HTML_META_CHARSET.search(data, 0, 4096):
            charset = m.group(1).decode("ascii")
    text, defect = _decode(data, _header_text(charset))
    if defect:
        defects.append(f"part {number}: {defect}")
    return text.replace("\r\n", "\n")  # line ends as Python (and every client UI) writes them


def _decoded(part: Message, number: int, defects: list[str]) -> bytes:
    """_content, noting what undoing the transfer encoding found (bad base64)."""
    known = len(part.defects)
    data = _content(part)
    for d in part.defects[known:]:
        defects.append(f"part {number}: {_defect_name(d)}")
    return data


def _content(part: Message) -> bytes:
    """The part's content, transfer encoding undone; a message/* part as bytes."""
    if part.is_multipart():
        # message/rfc822 and the like: compat32 keeps them parsed; write them back out.
        return b"".join(m.as_bytes(policy=_REWRITE) for m in part.get_payload() if isinstance(m, Message))
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _content_type(part: Message) -> str:
    ctype = part.get_content_type()
    return ctype if _CONTENT_TYPE.fullmatch(ctype) else "application/octet-stream"


def _filename(part: Message) -> str:
    return _header_text(part.get_filename()) or ""


def _header_text(value) -> str | None:
    """A header value or parameter compat32 gave back (a str whose 8-bit bytes are
    surrogate escapes, sometimes a Header object), decoded; None stays None."""
    if value is None:
        return None
    value = str(value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # raw 8-bit bytes, which compat32 carries as surrogates
        value = _text(value.encode("utf-8", "surrogateescape").decode("latin-1"))
    return _one_line(decode_words(value))
