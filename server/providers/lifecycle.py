"""The provider lifecycle: create, read, change, check, activate, sign in, delete.

Knows nothing of gRPC (servicer.py translates). Every rule about *when*
credentials are checked and *what* state follows lives here; the words for each
state are in reasons.py.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, ContextManager, Iterable, Mapping

from mailgate.drivers.api import (AuthorizationFailed, Driver, DriverContext, Notice, NotConfigured,
                                  ProviderConfig, Report)
from mailgate.drivers.registry import DriverRegistry

from .. import limits, paging
from ..access import scope
from ..access.tokens import UNRESTRICTED, Principal
from ..clock import utcnow
from ..errors import FailedPrecondition, InvalidArgument, Violation, Violations, etag_mismatch, name_taken
from ..secrets import SecretBox
from ..runtime import lane
from ..store.db import Database
from ..store.models import ProviderRow
from . import reasons, validation
from .authorizations import AuthorizationStore
from .events import ProviderChange, ProviderEvents
from .history import Event, EventType, History, checks_failed
from .state import State, Status, StoredProvider
from .store import ProviderStore

log = logging.getLogger("mailgate.providers")

# Provider fields an update may name; `settings.*` and `secrets.*` paths too.
WRITABLE = ("display_name", "account", "from_name", "receive_emails", "active_reference",
            "reply_to", "campaign")

@dataclass(frozen=True)
class PendingAuthorization:
    uri: str
    state: str
    expire_time: datetime


def not_configured(e: NotConfigured, driver: Driver) -> FailedPrecondition:
    return FailedPrecondition(str(e), reason="DRIVER_NOT_CONFIGURED", metadata={"type": driver.type})


class Providers:
    def __init__(self, db: Database, box: SecretBox, events: ProviderEvents, history: History,
                 drivers: DriverRegistry, ctx: DriverContext, pages: paging.PageTokens,
                 authorization_ttl: float = 600):
        self.db, self.box, self.events, self.history = db, box, events, history
        self.pages = pages
        self.drivers, self.ctx = drivers, ctx
        self.authorization_ttl = authorization_ttl

    async def _changed(self, provider_id: str, stored: StoredProvider | None, config_changed: bool = True) -> None:
        await self.events.publish(ProviderChange(provider_id, stored, config_changed))

    def _store(self, session: Any) -> ProviderStore:
        return ProviderStore(session, self.box)

    # -- reads
    async def get(self, provider_id: str) -> StoredProvider:
        return await self.db.run(lambda s: self._store(s).get(provider_id))

    async def list_events(self, provider_id: str, filter_text: str, page_token: str, size: int
                          ) -> paging.Page[Event]:
        """A page of the provider's history, newest first; NotFound if it does not exist."""
        await self.get(provider_id)
        return await self.history.list(provider_id, filter_text, page_token, size)

    async def list(self, filter_text: str, page_token: str, size: int, within: Principal = UNRESTRICTED
                   ) -> paging.Page[StoredProvider]:
        filters = paging.parse_filter(filter_text, {
            "type": str, "campaign": str, "state": paging.state_name(State), "receive_emails": _bool_filter})
        where = scope.where(within, ProviderRow.id, ProviderRow.campaign)
        return await self.pages.page(
            lambda after, limit: self.db.run(lambda s: self._store(s).list(filters, after, limit, where)),
            lambda r: (r.create_time, r.id), "providers", filter_text, page_token, size)

    # -- create
    async def create(self, config: ProviderConfig, validate_only: bool = False
                     ) -> tuple[StoredProvider, list[Notice]]:
        driver = self._driver(config.type)
        config, notices = self.prepare(driver, config)
        taken = await self.db.run(lambda s: self._store(s).is_name_taken(config.display_name))
        if taken:
            raise name_taken(config.display_name)
        if driver.capabilities.oauth:
            status = reasons.sign_in_pending("waiting for authorization: call ActivateProvider")
        else:
            with checking(config):
                report = await driver.validate(config, self.ctx)
            if not report.ok:
                log.info("create %r refused: %s", config.display_name, _summary(report))
                raise reasons.checks_failed(report, "not created")
            status = reasons.checked("credentials checked at creation")
        config = config.with_(id=str(uuid.uuid4()))
        if validate_only:
            now = utcnow()
            return StoredProvider(config, status.state, status.cause, status.reason, now, now, now, 0), notices
        stored = await self.db.run(lambda s: self._store(s).insert(config, status))
        log.info("created provider %s %r (%s) %s", stored.id, config.display_name, config.type, status.state.value)
        await self._changed(stored.id, stored)
        return stored, notices

    def prepare(self, driver: Driver, config: ProviderConfig) -> tuple[ProviderConfig, list[Notice]]:
        """Driver defaults and legacy mapping, then every field rule."""
        config = config.with_(reply_to=tuple(_split_addresses(config.reply_to)),
                              display_name=config.display_name.strip(),
                              account=config.account.strip())
        v = Violations()
        validation.check_limits(config, driver, v)  # before the driver parses anything
        v.raise_if_any()
        config, notices = driver.prepare(config)
        try:
            validation.check_provider(config, driver, self.ctx, v)
        except NotConfigured as e:  # a rule from the server's configuration that cannot be read
            raise not_configured(e, driver) from None
        v.raise_if_any()
        return config, notices

    # -- update
    async def update(self, provider_id: str, patch: ProviderConfig, paths: set[str],
                     etag: str = "", validate_only: bool = False
                     ) -> tuple[StoredProvider, list[Notice]]:
        current = await self.get(provider_id)
        version = _etag_version(etag) if etag else None
        if version is not None and version != current.version:
            raise etag_mismatch(provider_id, current.version)
        driver = self._driver(current.config.type)
        merged = merge(current.config, patch, paths)
        config, notices = self.prepare(driver, merged)
        # A secret typed in again counts as changed: the admin wants it tried.
        given = {k for k, val in patch.secrets.items() if val and ("settings" in paths or f"secrets.{k}" in paths)}
        changed = (changed_paths(current.config, config) | {f"secrets.{k}" for k in given}
                   | {p for p in paths if p.startswith("secrets.")})
        v = Violations()
        validation.check_secrets_bound(driver, current.config, changed, given, v)
        v.raise_if_any()
        status = None
        signed_out = driver.capabilities.oauth and "account" in changed
        if signed_out:  # the tokens are the old account's
            config = config.with_(secrets={})
            status = reasons.sign_in_pending(f"account changed to {config.account}: sign in again (ActivateProvider)")
        elif changed and current.state is not State.GREY and driver.needs_recheck(changed):
            with checking(config):
                report = await driver.validate(config, self.ctx)
            if not report.ok:
                log.info("update of %s refused: %s", provider_id, _summary(report))
                if not validate_only:
                    await self.history.record(*checks_failed(provider_id, report, "update refused"))
                raise reasons.checks_failed(report, "not updated")
            status = reasons.checked("credentials checked after update")
        if validate_only:
            if status is None:
                return replace(current, config=config), notices
            return replace(current, config=config, state=status.state, cause=status.cause,
                           state_reason=status.reason), notices

        def write(s: Any) -> StoredProvider:
            if signed_out:
                AuthorizationStore(s, self.box).drop_for(provider_id)
            return self._store(s).update(config, version or current.version, status)

        stored = await self.db.run(write)
        await driver.release(provider_id)  # pooled connections use the old settings
        log.info("updated provider %s: %s", provider_id, ", ".join(sorted(changed)) or "no change")
        await self._changed(provider_id, stored, config_changed=bool(changed))
        return stored, notices

    # -- delete
    async def delete(self, provider_id: str, etag: str = "") -> None:
        version = _etag_version(etag) if etag else None
        stored = await self.get(provider_id)
        await self.db.run(lambda s: self._store(s).delete(provider_id, version))
        driver = self.drivers.get(stored.config.type)
        if driver:
            await driver.release(provider_id)
        log.info("deleted provider %s", provider_id)
        await self._changed(provider_id, None)

    # -- checks and activation
    async def validate(self, target: str | ProviderConfig) -> tuple[Report, list[Notice]]:
        """Checks a stored provider (its id) or a candidate; stores nothing."""
        if isinstance(target, str):
            config, notices = (await self.get(target)).config, []
            driver = self._driver(config.type)
        else:
            driver = self._driver(target.type)
            config, notices = self.prepare(driver, target)
        with checking(config):
            report = await driver.validate(config, self.ctx)
        if isinstance(target, str):
            await self.history.record(*checks_failed(target, report, "validation"))
        return report, notices

    async def activate(self, provider_id: str
                       ) -> tuple[StoredProvider, Report, PendingAuthorization | None]:
        """Checks the provider (GREEN or RED), or for OAuth starts a sign-in: the
        provider keeps its state until CompleteAuthorization."""
        current = await self.get(provider_id)
        driver = self._driver(current.config.type)
        await driver.release(provider_id)  # a fresh start: no pooled connection, no refused token
        try:
            with checking(current.config):
                activation = await driver.activate(current.config, self.ctx)
        except NotConfigured as e:
            raise not_configured(e, driver) from None
        if activation.authorization:
            auth = activation.authorization
            expires = await self.db.run(lambda s: AuthorizationStore(s, self.box).add(
                provider_id, auth.state, auth.flow, self.authorization_ttl))
            log.info("provider %s: sign-in started, valid until %s", provider_id, f"{expires:%H:%M:%S}")
            await self.history.record(Event(provider_id, EventType.AUTHORIZATION_STARTED,
                                            reasons.sign_in_started(expires)))
            return current, Report(), PendingAuthorization(auth.uri, auth.state, expires)
        report = activation.report or Report()
        status = reasons.checked("activated") if report.ok else reasons.activation_failed(report)
        await self.history.record(*checks_failed(provider_id, report, "activation"))
        stored, _ = await self.db.run(lambda s: self._store(s).set_state(provider_id, status))
        log.info("activated provider %s: %s %s", provider_id, status.state.value, status.reason)
        await self._changed(provider_id, stored, config_changed=False)
        return stored, report, None

    async def complete_authorization(self, state: str, response: Mapping[str, str],
                                     allowed: Callable[[StoredProvider], None] = lambda p: None
                                     ) -> tuple[StoredProvider, Report]:
        """Finishes a sign-in: the state is used up first, whatever follows. The
        tokens are stored only for the provider's own account, and the mailbox is
        proved with them before the provider turns GREEN. `allowed` raises for a
        caller who may not see the provider the state belongs to."""
        provider_id, flow = await self.db.run(lambda s: AuthorizationStore(s, self.box).take(state))
        current = await self.get(provider_id)
        allowed(current)
        driver = self._driver(current.config.type)
        account = current.config.account
        failure = None
        if response.get("error"):
            failure = "sign-in refused: " + ": ".join(
                v for v in (response.get("error"), response.get("error_description")) if v)
        else:
            try:
                with checking(current.config):
                    done = await driver.complete_authorization(current.config, flow, response, self.ctx)
            except AuthorizationFailed as e:
                failure = f"sign-in failed: {e}"
            except NotConfigured as e:
                raise not_configured(e, driver) from None
            else:
                if done.account.casefold() != account.casefold():
                    failure = (f"signed in as {done.account or 'an unknown account'}, the provider's "
                               f"account is {account}: sign in as {account}")
        await driver.release(provider_id)
        if failure:  # no tokens kept: the provider waits for a sign-in that works
            log.info("provider %s: %s", provider_id, failure)
            await self.history.record(Event(provider_id, EventType.AUTHORIZATION_FAILED, failure))
            stored = await self._write(current.config.with_(secrets={}), reasons.sign_in_failed(failure))
            return stored, Report()
        # Stored before they are used: a refresh token rotated by the checks is saved over them.
        config = current.config.with_(secrets=dict(done.secrets))
        await self.db.run(lambda s: self._store(s).update(config, None))
        await self.history.record(Event(provider_id, EventType.AUTHORIZATION_COMPLETED,
                                        reasons.signed_in_as(done.account)))
        with checking(config):
            report = await driver.validate(config, self.ctx)
        await self.history.record(*checks_failed(provider_id, report, "checks after the sign-in"))
        return await self._write(config, reasons.signed_in(done.account, report), reread=True), report

    async def _write(self, config: ProviderConfig, status: Status, reread: bool = False) -> StoredProvider:
        """Stores the config (or, `reread`, keeps what is stored: secrets renewed
        meanwhile) with a new status; the listeners hear of it as a new config."""
        if reread:
            stored, _ = await self.db.run(lambda s: self._store(s).set_state(config.id, status))
        else:
            stored = await self.db.run(lambda s: self._store(s).update(config, None, status))
        await self._changed(stored.id, stored)
        return stored

    # -- helpers
    def _driver(self, type_: str) -> Driver:
        driver = self.drivers.get(type_)
        if driver is None:
            installed = ", ".join(self.drivers.types()) or "none"
            problem = "required" if not type_ else f"unknown driver {type_!r}; installed: {installed}"
            raise InvalidArgument([Violation("type", problem)])
        return driver


def checking(config: ProviderConfig) -> ContextManager[None]:
    """The lane (server.runtime) of the checks a caller waits on: its own, for this
    provider, or for a candidate's servers."""
    target = config.id or "candidate " + ",".join(sorted(
        f"{v.get('host')}:{v.get('port')}" for v in config.settings.values() if isinstance(v, dict) and v.get("host")))
    return lane(scope.current().name, target)


def merge(current: ProviderConfig, patch: ProviderConfig, paths: Iterable[str]) -> ProviderConfig:
    """Applies the masked paths of `patch` to `current`. `settings` replaces every
    non-secret setting (secrets are kept unless given); `settings.a.b` one subtree;
    `secrets.x` one secret (an empty value removes it)."""
    changes: dict[str, Any] = {}
    settings = validation.copy_tree(current.settings)
    secrets = dict(current.secrets)
    for path in paths:
        if path in WRITABLE:
            changes[path] = getattr(patch, path)
        elif path == "settings":
            settings = validation.copy_tree(patch.settings)
            secrets.update(patch.secrets)
        elif path.startswith("settings."):
            sub = path.removeprefix("settings.")
            validation.set_path(settings, sub, validation.copy_tree(validation.get_path(patch.settings, sub)))
        elif path.startswith("secrets."):
            name = path.removeprefix("secrets.")
            if patch.secrets.get(name):
                secrets[name] = patch.secrets[name]
            else:
                secrets.pop(name, None)
        else:
            raise InvalidArgument([Violation("update_mask", f"{path!r} cannot be updated")])
    return current.with_(settings=settings, secrets=secrets, **changes)


def changed_paths(old: ProviderConfig, new: ProviderConfig) -> set[str]:
    changed = {f for f in WRITABLE if getattr(old, f) != getattr(new, f)}
    changed |= {f"settings.{p}" for p in _diff(old.settings, new.settings)}
    changed |= {f"secrets.{k}" for k in set(old.secrets) | set(new.secrets)
                if old.secrets.get(k) != new.secrets.get(k)}
    return changed


def _diff(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            out |= _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return set() if a == b else {prefix.rstrip(".")}


def _split_addresses(entries: Iterable[str]) -> list[str]:
    """The admin screen joins several Reply-To addresses with `;`."""
    return [a.strip() for e in entries for a in e.replace(",", ";").split(";") if a.strip()]


def _etag_version(etag: str) -> int:
    try:
        return int(etag.removeprefix("W/").strip('"'))
    except ValueError:
        raise InvalidArgument([Violation("etag", f"{limits.shown(etag)} is not an etag from this service")]) from None


def _bool_filter(value: str) -> bool:
    if value not in ("true", "false"):
        raise ValueError("must be true or false")
    return value == "true"


def _summary(report: Report) -> str:
    return "; ".join(f"{c.id} {c.error_code.value}" for c in report.failures)
