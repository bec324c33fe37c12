"""Who hears of provider changes: the outbox (mail that waited for a provider that
turned GREEN), the inbound sources (start or stop watching its mailbox). The
listeners are registered in app.start."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

from .state import StoredProvider

log = logging.getLogger("mailgate.providers")


@dataclass(frozen=True)
class ProviderChange:
    provider_id: str
    stored: StoredProvider | None  # None: deleted
    # Its settings, secrets or account changed (created, updated, signed in), not only its state.
    config_changed: bool


Listener = Callable[[ProviderChange], Awaitable[None]]


class ProviderEvents:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def publish(self, change: ProviderChange) -> None:
        """After the store: each listener in turn; one's trouble never fails the change."""
        for listener in self._listeners:
            try:
                await listener(change)
            except Exception:
                log.exception("listener %r failed for provider %s", listener, change.provider_id)
