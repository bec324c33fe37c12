"""API tokens: who a caller is (a Principal) from the bearer secret it presents.

A secret is `mgt_<id>_<random>`: the id finds the row, the SHA-256 of the whole
secret must match the stored hash. Principals are cached for a short time so a
call costs no database read; a revocation forgets the cached entry on every
replica at once (a NOTIFY on PostgreSQL, heard by each replica's Listener), and
the cache's lifetime bounds what a lost notification could leave behind.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import limits
from ..clock import utcnow
from ..converters import name_problem
from ..errors import NotFound, Unauthenticated, Violations
from ..inbound import wakeups
from ..outbound.compose import text_problem
from ..secrets import write_private_file
from ..store.db import Database
from ..store.models import ApiTokenRow
from .permissions import ALL, PERMISSIONS

log = logging.getLogger("mailgate.access")

_SECRET = re.compile(r"mgt_([0-9a-f]{32})_[A-Za-z0-9_-]{43}")
CACHE_SECONDS = 60.0
CACHE_ENTRIES = 10_000
TOUCH_SECONDS = 60.0  # last_use_time is kept to the minute: not one write per call
MAX_NAME = limits.DISPLAY_NAME
MAX_SCOPE_ITEMS = 100


@dataclass(frozen=True)
class Principal:
    """A caller. Empty `campaigns`/`providers` mean unscoped."""

    name: str  # `tokens/{id}`, or what the server calls an unauthenticated setup
    display_name: str
    permissions: frozenset[str]
    campaigns: frozenset[str] = frozenset()
    providers: frozenset[str] = frozenset()  # provider ids

    def may(self, permission: str) -> bool:
        return ALL in self.permissions or permission in self.permissions

    @property
    def scoped(self) -> bool:
        return bool(self.campaigns or self.providers)

    def sees(self, provider_id: str, campaign: str) -> bool:
        """Whether a provider (and what it sent and received) is within scope."""
        return ((not self.providers or provider_id in self.providers)
                and (not self.campaigns or campaign in self.campaigns))


# When authentication is off (a trusted network, or tests that say so).
UNRESTRICTED = Principal("unrestricted", "authentication off", frozenset({ALL}))


def token_topic(token_id: str) -> str:
    return f"token:{token_id}"


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class _Entry:
    principal: Principal | None  # None: no such token (cached too, so a flood of guesses costs no reads)
    digest: str
    expire_time: datetime | None
    fetched: float
    touched: float = field(default=0.0)


class Tokens:
    def __init__(self, db: Database):
        self._db = db
        self._cache: dict[str, _Entry] = {}

    async def authenticate(self, secret: str) -> Principal:
        m = _SECRET.fullmatch(secret)
        if m is None:
            raise Unauthenticated("the bearer token is malformed: expected mgt_<id>_<secret>")
        token_id = m.group(1)
        now = time.monotonic()
        entry = self._cache.get(token_id)
        if entry is None or now - entry.fetched > CACHE_SECONDS:
            entry = await self._db.run(lambda s: _load(s, token_id, now))
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()
            self._cache[token_id] = entry
        if entry.principal is None or not hmac.compare_digest(entry.digest, secret_hash(secret)):
            raise Unauthenticated("the bearer token is not valid (unknown or revoked)")
        if entry.expire_time is not None and entry.expire_time <= utcnow():
            raise Unauthenticated("the bearer token has expired")
        if now - entry.touched >= TOUCH_SECONDS:  # one call a minute per token pays for a write
            entry.touched = now
            await self._db.run(lambda s: _touch(s, token_id))
        return entry.principal

    def forget(self, topics: list[str]) -> None:
        """Drops cached tokens named by `token:<id>` topics (from any thread)."""
        for topic in topics:
            kind, _, token_id = topic.partition(":")
            if kind == "token":
                self._cache.pop(token_id, None)

    async def create(self, display_name: str, permissions: list[str], campaigns: list[str],
                     provider_ids: list[str], expire_time: datetime | None) -> tuple[ApiTokenRow, str]:
        token_id = secrets.token_hex(16)
        secret = f"mgt_{token_id}_{secrets.token_urlsafe(32)}"
        row = ApiTokenRow(id=token_id, secret_hash=secret_hash(secret), display_name=display_name,
                          permissions=sorted(set(permissions)), campaigns=sorted(set(campaigns)),
                          providers=sorted(set(provider_ids)), create_time=utcnow(), expire_time=expire_time,
                          last_use_time=None)

        def insert(s: Session) -> ApiTokenRow:
            s.add(row)
            wakeups.notify(s, [token_topic(token_id)])  # another replica may have cached "no such token"
            return row
        await self._db.run(insert)
        self.forget([token_topic(token_id)])
        return row, secret

    async def list(self, after: tuple[datetime, str] | None, limit: int) -> list[ApiTokenRow]:
        def fetch(s: Session) -> list[ApiTokenRow]:
            q = select(ApiTokenRow).order_by(ApiTokenRow.create_time, ApiTokenRow.id)
            if after is not None:
                t, i = after
                q = q.where((ApiTokenRow.create_time > t) | ((ApiTokenRow.create_time == t) & (ApiTokenRow.id > i)))
            return list(s.scalars(q.limit(limit)))
        return await self._db.run(fetch)

    async def revoke(self, token_id: str) -> None:
        def delete(s: Session) -> bool:
            row = s.get(ApiTokenRow, token_id)
            if row is None:
                return False
            s.delete(row)
            wakeups.notify(s, [token_topic(token_id)])
            return True
        if not await self._db.run(delete):
            raise NotFound(f"token 'tokens/{token_id}' does not exist")
        self.forget([token_topic(token_id)])
        log.info("token tokens/%s revoked", token_id)

    async def ensure_admin_file(self, path: Path) -> None:
        """On first start, an administrator token in a file only its owner can read,
        so the CLI on the same machine works with no set-up. Kept while it is valid."""
        if path.exists():
            try:
                await self.authenticate(path.read_text().strip())
                return
            except Unauthenticated:
                log.warning("the administrator token in %s is no longer valid: writing a new one", path)
        _, secret = await self.create(f"administrator ({socket.gethostname()}:{path.resolve()})"[:MAX_NAME],
                                      [ALL], [], [], None)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private_file(path, secret + "\n")
        log.info("wrote an administrator token to %s (mode 0600)", path)


def _load(s: Session, token_id: str, now: float) -> _Entry:
    row = s.get(ApiTokenRow, token_id)
    if row is None:
        return _Entry(None, "", None, now)
    principal = Principal(f"tokens/{row.id}", row.display_name, frozenset(row.permissions),
                          frozenset(row.campaigns), frozenset(row.providers))
    return _Entry(principal, row.secret_hash, row.expire_time, now)


def _touch(s: Session, token_id: str) -> None:
    row = s.get(ApiTokenRow, token_id)
    if row is not None:
        row.last_use_time = utcnow()


def check_request(display_name: str, permissions: list[str], campaigns: list[str], providers: list[str],
                  expire_time: datetime | None, prefix: str = "token") -> list[str]:
    """Raises InvalidArgument for a bad token request; returns the provider ids."""
    v = Violations()
    if not display_name.strip():
        v.add(f"{prefix}.display_name", "is required: say what the token is for")
    elif len(display_name) > MAX_NAME:
        v.add(f"{prefix}.display_name", f"must be at most {MAX_NAME} characters")
    elif problem := text_problem(display_name):
        v.add(f"{prefix}.display_name", problem)
    if not permissions:
        v.add(f"{prefix}.permissions", "give at least one permission; " + _known())
    for i, p in enumerate(permissions[:MAX_SCOPE_ITEMS]):
        if p not in PERMISSIONS:
            v.add(f"{prefix}.permissions[{i}]", f"unknown permission {p[:64]!r}; " + _known())
    ids: list[str] = []
    for what, items in (("permissions", permissions), ("campaigns", campaigns), ("providers", providers)):
        if len(items) > MAX_SCOPE_ITEMS:
            v.add(f"{prefix}.{what}", f"at most {MAX_SCOPE_ITEMS} entries")
    for i, c in enumerate(campaigns[:MAX_SCOPE_ITEMS]):
        if not c or len(c) > MAX_NAME:
            v.add(f"{prefix}.campaigns[{i}]", f"must be 1 to {MAX_NAME} characters")
        elif problem := text_problem(c):
            v.add(f"{prefix}.campaigns[{i}]", problem)
    for i, name in enumerate(providers[:MAX_SCOPE_ITEMS]):
        if name_problem(name, "providers"):
            v.add(f"{prefix}.providers[{i}]", "must be a provider name, providers/{provider}")
        else:
            ids.append(name.partition("/")[2])
    if expire_time is not None and expire_time <= utcnow():
        v.add(f"{prefix}.expire_time", "is in the past")
    v.raise_if_any()
    return ids


def _known() -> str:
    return "known: " + ", ".join(PERMISSIONS)
