"""The stored providers as every room sees them: read one, list those that
receive, change a state with its cause, keep renewed secrets, add to a provider's
history. Every change it makes is published to the listeners (events.ProviderEvents).
It is also what drivers call back into (drivers.api.ProviderCallbacks)."""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from mailgate.drivers.api import ErrorCode, ProviderCallbacks

from ..secrets import SecretBox
from ..store.db import Database
from . import reasons
from .events import ProviderChange, ProviderEvents
from .history import Event, EventType, History
from .state import Cause, State, Status, StoredProvider
from .store import ProviderStore

log = logging.getLogger("mailgate.providers")


class ProviderRecords(ProviderCallbacks):
    def __init__(self, db: Database, box: SecretBox, events: ProviderEvents, history: History):
        self.db, self.box, self.events, self.history = db, box, events, history

    def store(self, session: Any) -> ProviderStore:
        """For a transaction of the caller's that reads providers with other rows."""
        return ProviderStore(session, self.box)

    async def get(self, provider_id: str) -> StoredProvider:
        return await self.db.run(lambda s: self.store(s).get(provider_id))

    async def get_with_fingerprint(self, provider_id: str) -> tuple[StoredProvider, tuple]:
        return await self.db.run(lambda s: self.store(s).get_with_fingerprint(provider_id))

    async def receiving(self, page: int = 1000) -> list[StoredProvider]:
        """Every provider with receive_emails on."""
        found: list[StoredProvider] = []
        after = None
        while True:
            rows = await self.db.run(lambda s: self.store(s).list({"receive_emails": True}, after, page))
            found += rows
            if len(rows) < page:
                return found
            after = (rows[-1].create_time, rows[-1].id)

    async def set_state(self, provider_id: str, status: Status,
                        only_if: Callable[[State, Cause], bool] | None = None) -> StoredProvider:
        """For the rooms that find a mailbox broken (sending, watching) or mended.
        `only_if(state, cause)` of the stored provider decides, in the same
        transaction, whether it changes (e.g. GREEN again only if the mailbox made it RED)."""
        stored, changed = await self.db.run(lambda s: self.store(s).set_state(provider_id, status, only_if))
        if changed:
            log.info("provider %s is %s (%s): %s", provider_id, status.state.value, status.cause.value,
                     status.reason)
            await self.events.publish(ProviderChange(provider_id, stored, config_changed=False))
        return stored

    # -- drivers.api.ProviderCallbacks
    async def save_secrets(self, provider_id: str, secrets: Mapping[str, str]) -> None:
        await self.db.run(lambda s: self.store(s).save_secrets(provider_id, secrets))
        log.info("provider %s: renewed %s stored", provider_id, ", ".join(sorted(secrets)))

    async def authorization_lost(self, provider_id: str, message: str) -> None:
        await self.history.record(Event(provider_id, EventType.TOKEN_RENEWAL_FAILED, reasons.token_refused(message),
                                        error_code=ErrorCode.AUTHORIZATION_REQUIRED.value))
        await self.set_state(provider_id, reasons.authorization_lost(message))

    async def token_renewed(self, provider_id: str, valid_for: float) -> None:
        await self.history.record(Event(provider_id, EventType.TOKEN_RENEWED, reasons.token_renewed(valid_for)))

    async def token_renewal_failed(self, provider_id: str, message: str) -> None:
        await self.history.record(Event(provider_id, EventType.TOKEN_RENEWAL_FAILED, reasons.token_unavailable(message),
                                        error_code=ErrorCode.TOKEN_UNAVAILABLE.value))
