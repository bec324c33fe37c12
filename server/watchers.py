"""Keeps the mailbox of every receiving provider watched, and is the watch hub's
sink: what arrives is committed to the campaign queue before the hub treats it as
fetched; a mailbox that goes down turns its provider RED, and GREEN again when it
comes back."""
from __future__ import annotations

import asyncio
import logging

from mailgate.drivers.transport.pop3_poll import Pop3Poller, Pop3Spec
from mailgate.drivers.transport.watch import MailboxSpec, WatchHub

from .domain import State, StoredProvider
from .inbound import InboundQueue
from .providers import REAUTHORIZE, Providers

log = logging.getLogger("mailgate.watchers")

FOLDER = "INBOX"
MAILBOX_DOWN = "receiving stopped: "  # the prefix of every RED reason the watchers set


class Watchers:
    def __init__(self, providers: Providers, queue: InboundQueue, loop: asyncio.AbstractEventLoop,
                 *, reconnect_base: float = 1.0):
        self.providers, self.queue, self.loop = providers, queue, loop
        self.hub = WatchHub(self, throttle=providers.ctx.throttle, reconnect_base=reconnect_base)
        self.pop3 = Pop3Poller(self, throttle=providers.ctx.throttle, reconnect_base=reconnect_base)
        providers.listeners.append(self.provider_changed)

    async def start(self) -> None:
        """Watches every receiving provider that has been activated."""
        rows, token = [], ""
        while True:
            page, token = await self.providers.list("receive_emails = true", token, 1000)
            rows += page
            if not token:
                break
        for stored in rows:
            await self.provider_changed(stored.id, stored)
        log.info("watching %d mailbox(es)", self.watching())

    async def provider_changed(self, provider_id: str, stored: StoredProvider | None) -> None:
        spec = self._spec(stored) if stored else None
        watching, other = (self.pop3, self.hub) if isinstance(spec, Pop3Spec) else (self.hub, self.pop3)
        await asyncio.to_thread(other.unwatch, provider_id)  # the protocol may have changed
        if spec is None:
            await asyncio.to_thread(watching.unwatch, provider_id)
        else:
            await asyncio.to_thread(watching.watch, spec)

    def watching(self) -> int:
        return self.hub.stats()["watching"] + self.pop3.stats()["watching"]

    def _spec(self, stored: StoredProvider) -> MailboxSpec | Pop3Spec | None:
        # GREY: never activated. RED stays watched: the watcher is how it recovers;
        # unless its tokens were refused: only a new sign-in helps then.
        if not stored.config.receive_emails or stored.state is State.GREY or (
                stored.state is State.RED and stored.state_reason.startswith(REAUTHORIZE)):
            return None
        driver = self.providers.drivers.get(stored.config.type)
        return driver.mailbox(stored.config, self.providers.ctx) if driver else None

    async def close(self) -> None:
        await asyncio.gather(asyncio.to_thread(self.hub.close), asyncio.to_thread(self.pop3.close))

    # -- the hub's sink (its threads)
    def position(self, key: str) -> tuple[int | None, int]:
        return self.queue.position(key, FOLDER)

    def numbers(self, key: str, uidls: list[str]) -> dict[str, int]:
        return self.queue.pop3_numbers(key, FOLDER, uidls)

    def deliver(self, key: str, uidvalidity: int, messages: list[tuple[int, bytes]]) -> None:
        self.queue.commit(key, FOLDER, uidvalidity, messages)

    def status(self, key: str, up: bool, reason: str) -> None:
        asyncio.run_coroutine_threadsafe(self._set_state(key, up, reason), self.loop).result(30)

    async def _set_state(self, provider_id: str, up: bool, reason: str) -> None:
        """RED while the mailbox is down; GREEN again when it is back, but only if it
        was the mailbox that made it RED (not, say, a refused SMTP login)."""
        stored = await self.providers.get(provider_id)
        if stored.state is State.GREY or stored.state_reason.startswith(REAUTHORIZE):
            return
        if not up:
            await self.providers.set_state(provider_id, State.RED, MAILBOX_DOWN + reason)
        elif stored.state is State.RED and stored.state_reason.startswith(MAILBOX_DOWN):
            await self.providers.set_state(provider_id, State.GREEN, "mailbox reachable again")
