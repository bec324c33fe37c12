"""AIP-158 page tokens and the AIP-160 filter subset the List methods accept."""
from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable, Generic, TypeVar

from . import limits
from .converters import name_problem
from .errors import InvalidArgument, Violation

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# A page's answer at most: under the 4 MB that gRPC clients take by default.
MAX_PAGE_BYTES = 3 << 20

T = TypeVar("T")

# The filter's tokens, in the order tried: a quoted string (JSON escapes: \" and \\
# inside), "=", a bare word (field names, AND, bare values, true/false), blanks.
_TOKEN = re.compile(r'(?P<string>"(?:[^"\\]|\\.)*")|(?P<equals>=)|(?P<word>[A-Za-z0-9_.@-]+)|(?P<blank>\s+)')


def parse_filter(text: str, fields: dict[str, Callable[[str], Any]]) -> dict[str, Any]:
    """`type = "smtp_imap" AND state = STATE_RED` -> {"type": "smtp_imap", "state": "RED"}.
    `fields` maps each filterable field to a function that converts (and checks) its
    value. Quoted values are read whole before the terms are split, so one may hold
    " AND "; a field may appear once."""
    if len(text) > limits.FILTER:
        raise _bad(limits.too_long(limits.FILTER, len(text)))
    result: dict[str, Any] = {}
    tokens = _tokens(text, fields)
    expected = f"field = value joined by AND ({', '.join(fields)})"
    i = 0
    while i < len(tokens):
        if i and tokens[i] != ("word", "AND"):
            raise _bad(f"expected AND before {limits.shown(tokens[i][1])}")
        i += 1 if i else 0
        term = tokens[i:i + 3]
        if len(term) < 3 or term[0][0] != "word" or term[1][0] != "equals" or term[2][0] == "equals":
            raise _bad(f"cannot parse {limits.shown(' '.join(v for _, v in term) or 'the end')}: expected {expected}")
        (_, name), _, (kind, raw) = term
        if name not in fields:
            raise _bad(f"cannot filter on {limits.shown(name)}; filterable: {', '.join(fields)}")
        if name in result:
            raise _bad(f"{name!r} appears more than once; give each field at most once")
        value = _string(raw) if kind == "string" else raw
        try:
            result[name] = fields[name](value)
        except ValueError as e:
            raise _bad(f"{name}: {e}") from None
        i += 3
    return result


def _string(raw: str) -> str:
    """A quoted value's text (JSON escapes), refused when it is not one or would hold a
    character no stored value has: controls, lone surrogates."""
    try:
        value = json.loads(raw)
    except ValueError:
        raise _bad(f"{limits.shown(raw)} is not a quoted string: escapes are JSON's (\\\" \\\\ \\n \\uXXXX)") from None
    if any(c < " " or "\x7f" <= c < "\xa0" or "\ud800" <= c <= "\udfff" for c in value):
        raise _bad(f"{limits.shown(value)} holds a control character or a lone surrogate; no value has one")
    return value


def _tokens(text: str, fields: dict[str, Callable[[str], Any]]) -> list[tuple[str, str]]:
    """(kind, text) of each token but blanks."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            rest = text[pos:pos + 20]
            what = "an unterminated string" if rest.startswith('"') else repr(rest)
            raise _bad(f"cannot parse {what} at position {pos}: expected field = value joined by AND "
                       f"({', '.join(fields)})")
        if m.lastgroup != "blank":
            out.append((m.lastgroup or "", m.group()))
        pos = m.end()
    return out


def _bad(description: str) -> InvalidArgument:
    return InvalidArgument([Violation("filter", description)])


def id_from_name(collection: str) -> Callable[[str], str]:
    """A filter value converter: `providers/x` -> `x`."""
    def convert(value: str) -> str:
        if problem := name_problem(value, collection):
            raise ValueError(problem)
        return value.partition("/")[2]
    return convert


def state_name(states: type[enum.Enum]) -> Callable[[str], str]:
    """A filter value converter: `STATE_RED` or `RED` -> `RED`, for one of `states`."""
    return enum_name(states, "STATE_", "state")


def enum_name(members: type[enum.Enum], prefix: str, what: str) -> Callable[[str], str]:
    """A filter value converter: the proto enum's `PREFIX_NAME` or `NAME` -> `NAME`,
    for one of `members`."""
    def convert(value: str) -> str:
        name = value.removeprefix(prefix)
        if name not in members.__members__:
            raise ValueError(f"unknown {what} {limits.shown(value)}; use "
                             + ", ".join(prefix + m for m in members.__members__))
        return name
    return convert


def page_size(requested: int, maximum: int = MAX_PAGE_SIZE, default: int = DEFAULT_PAGE_SIZE) -> int:
    if requested < 0:
        raise InvalidArgument([Violation("page_size", "must not be negative")])
    return min(requested or default, maximum)


class PageTokens:
    """Page tokens (AIP-158): opaque to callers, and authenticated. A token is the
    position after which the next page starts, bound to its list and its filter, with
    an HMAC-SHA256 (truncated to 128 bits) under a key derived from the server's secret
    key: a token that was not issued by a server with that key (forged, altered, or from
    another list or filter) is refused before anything in it is read."""

    def __init__(self, key: bytes):
        self._key = key

    async def page(self, fetch: Callable[[Any, int], Awaitable[list[Any]]], key: Callable[[Any], tuple[datetime, str]],
                   collection: str, filter_text: str, page_token: str, size: int) -> Page[Any]:
        """One page of `collection`: `fetch(after, limit)` reads up to `limit` rows after
        the position `after` (None: from the start); `key(row)` is a row's position for
        the next token."""
        limit = page_size(size)
        after = self.decode(page_token, collection, filter_text)
        rows = await fetch(after, limit + 1)  # one more: is there a next page?
        return Page(rows[:limit], len(rows) > limit, lambda row: self.encode(key(row), collection, filter_text))

    def _mac(self, collection: str, payload: bytes) -> bytes:
        return hmac.new(self._key, collection.encode() + b"\0" + payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, after: tuple[datetime, str], collection: str, query: str) -> str:
        t, i = after
        payload = json.dumps({"t": t.isoformat(), "i": i, "q": _fingerprint(query)}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(payload + self._mac(collection, payload)).decode().rstrip("=")

    def decode(self, token: str, collection: str, query: str) -> tuple[datetime, str] | None:
        if not token:
            return None
        if len(token) > limits.PAGE_TOKEN:
            raise InvalidArgument([Violation("page_token", "not a page token from this service: "
                                             + limits.too_long(limits.PAGE_TOKEN, len(token)))])
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            raw = b""
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(raw) <= _MAC_BYTES or not hmac.compare_digest(mac, self._mac(collection, payload)):
            raise InvalidArgument([Violation("page_token", "not a page token of this list from this service "
                                             "(or the server's key changed): start again without one")])
        data = json.loads(payload)  # ours: it carries our MAC
        if data["q"] != _fingerprint(query):
            raise InvalidArgument([Violation("page_token", "was issued for another filter")])
        return datetime.fromisoformat(data["t"]), str(data["i"])


_MAC_BYTES = 16


@dataclass(frozen=True)
class Page(Generic[T]):
    """Up to a page size of rows, and whether more follow them."""

    rows: list[T]
    more: bool
    token_after: Callable[[T], str]  # the token of the page that starts after this row

    def shown(self, convert: Callable[[T], Any]) -> tuple[list[Any], str]:
        """The rows as the answer shows them (`convert`), as many as fit in MAX_PAGE_BYTES
        (one at least), and the next page's token ("" when none follows)."""
        items, total = [], 0
        for row in self.rows:
            item = convert(row)
            total += item.ByteSize() + 8  # a repeated field's tag and length, generously
            if items and total > MAX_PAGE_BYTES:
                break
            items.append(item)
        more = self.more or len(items) < len(self.rows)
        return items, self.token_after(self.rows[len(items) - 1]) if more else ""


def _fingerprint(query: str) -> str:
    return hashlib.sha256(query.encode("utf-8", "surrogatepass")).hexdigest()[:12]
