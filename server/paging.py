"""AIP-158 page tokens and the AIP-160 filter subset ListProviders accepts."""
from __future__ import annotations

import base64
import enum
import hashlib
import json
import re
from datetime import datetime
from typing import Any, Awaitable, Callable

from .errors import InvalidArgument, Violation

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

# The filter's tokens, in the order tried: a quoted string (JSON escapes: \" and \\
# inside), "=", a bare word (field names, AND, bare values, true/false), blanks.
_TOKEN = re.compile(r'(?P<string>"(?:[^"\\]|\\.)*")|(?P<equals>=)|(?P<word>[A-Za-z0-9_.@-]+)|(?P<blank>\s+)')


def parse_filter(text: str, fields: dict[str, Callable[[str], Any]]) -> dict[str, Any]:
    """`type = "smtp_imap" AND state = STATE_RED` -> {"type": "smtp_imap", "state": "RED"}.
    `fields` maps each filterable field to a function that converts (and checks) its
    value. Quoted values are read whole before the terms are split, so one may hold
    " AND "; a field may appear once."""
    result: dict[str, Any] = {}
    tokens = _tokens(text, fields)
    expected = f"field = value joined by AND ({', '.join(fields)})"
    i = 0
    while i < len(tokens):
        if i and tokens[i] != ("word", "AND"):
            raise _bad(f"expected AND before {tokens[i][1]!r}")
        i += 1 if i else 0
        term = tokens[i:i + 3]
        if len(term) < 3 or term[0][0] != "word" or term[1][0] != "equals" or term[2][0] == "equals":
            raise _bad(f"cannot parse {' '.join(v for _, v in term) or 'the end'!r}: expected {expected}")
        (_, name), _, (kind, raw) = term
        if name not in fields:
            raise _bad(f"cannot filter on {name!r}; filterable: {', '.join(fields)}")
        if name in result:
            raise _bad(f"{name!r} appears more than once; give each field at most once")
        value = json.loads(raw) if kind == "string" else raw
        try:
            result[name] = fields[name](value)
        except ValueError as e:
            raise _bad(f"{name}: {e}") from None
        i += 3
    return result


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
        prefix, _, rid = value.partition("/")
        if prefix != collection or not rid:
            raise ValueError(f"{value!r} is not a {collection} name ({collection}/{{id}})")
        return rid
    return convert


def state_name(states: type[enum.Enum]) -> Callable[[str], str]:
    """A filter value converter: `STATE_RED` or `RED` -> `RED`, for one of `states`."""
    def convert(value: str) -> str:
        name = value.removeprefix("STATE_")
        if name not in states.__members__:
            raise ValueError(f"unknown state {value!r}; use " + ", ".join(f"STATE_{s}" for s in states.__members__))
        return name
    return convert


async def page(fetch: Callable[[Any, int], Awaitable[list[Any]]], key: Callable[[Any], tuple[datetime, str]],
               filter_text: str, page_token: str, size: int) -> tuple[list[Any], str]:
    """One page: `fetch(after, limit)` reads up to `limit` rows after the position
    `after` (None: from the start); `key(row)` is a row's position for the next token."""
    limit = page_size(size)
    rows = await fetch(decode_token(page_token, filter_text), limit + 1)  # one more: is there a next page?
    token = encode_token(key(rows[limit - 1]), filter_text) if len(rows) > limit else ""
    return rows[:limit], token


def page_size(requested: int, maximum: int = MAX_PAGE_SIZE, default: int = DEFAULT_PAGE_SIZE) -> int:
    if requested < 0:
        raise InvalidArgument([Violation("page_size", "must not be negative")])
    return min(requested or default, maximum)


def _fingerprint(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:12]


def encode_token(after: tuple[datetime, str], query: str) -> str:
    t, i = after
    raw = json.dumps({"t": t.isoformat(), "i": i, "q": _fingerprint(query)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, query: str) -> tuple[datetime, str] | None:
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = (datetime.fromisoformat(data["t"]), str(data["i"]))
        same_query = data["q"] == _fingerprint(query)
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument([Violation("page_token", "not a page token from this service")]) from None
    if not same_query:
        raise InvalidArgument([Violation("page_token", "was issued for another filter")])
    return after
