"""Keeps the mailbox of every receiving provider watched, and is the watch hub's
sink: what arrives is committed to the campaign queue before the hub treats it as
fetched; a mailbox that goes down turns its provider RED, and GREEN again when it
comes back."""
from __future__ import annotations

import asyncio
import logging
import threading

from mailgate.drivers.mailbox import split_folder_key
from mailgate.drivers.transport.pop3_poll import Pop3Poller, Pop3Spec
from mailgate.drivers.transport.watch import MailboxSpec, WatchHub

from ..providers.state import State, StoredProvider
from .queue import InboundQueue
from ..providers.lifecycle import REAUTHORIZE, Providers

log = logging.getLogger("mailgate.watchers")

MAILBOX_DOWN = "receiving stopped: "  # the prefix of every RED reason the watchers set


class Watchers:
    def __init__(self, providers: Providers, queue: InboundQueue, loop: asyncio.AbstractEventLoop,
                 *, reconnect_base: float = 1.0):
        self.providers, self.queue, self.loop = providers, queue, loop
        self.hub = WatchHub(self, throttle=providers.ctx.throttle, reconnect_base=reconnect_base)
        self.pop3 = Pop3Poller(self, throttle=providers.ctx.throttle, reconnect_base=reconnect_base)
        self._lock = threading.Lock()
        self._keys: dict[str, set[str]] = {}  # provider id -> its watch keys
        self._down: dict[str, dict[str, str]] = {}  # provider id -> {key: reason} of folders down
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
        specs = self._specs(stored) if stored else []
        keep = {spec.key for spec in specs}
        with self._lock:
            gone = self._keys.pop(provider_id, set()) - keep
            if specs:
                self._keys[provider_id] = keep
            down = self._down.get(provider_id, {})
            for key in gone:
                down.pop(key, None)
        def apply() -> None:  # one hop to a thread: watch and unwatch may wait on the hubs' locks
            for key in gone:  # folders no longer watched, or the protocol changed
                self.hub.unwatch(key)
                self.pop3.unwatch(key)
            for spec in specs:
                target, other = (self.pop3, self.hub) if isinstance(spec, Pop3Spec) else (self.hub, self.pop3)
                other.unwatch(spec.key)  # the protocol may have changed
                target.watch(spec)
        await asyncio.to_thread(apply)

    def watching(self) -> int:
        """Mailboxes (folders) watched."""
        return self.hub.stats()["watching"] + self.pop3.stats()["watching"]

    def _specs(self, stored: StoredProvider) -> list[MailboxSpec | Pop3Spec]:
        # GREY: never activated. RED stays watched: the watcher is how it recovers;
        # unless its tokens were refused: only a new sign-in helps then.
        if not stored.config.receive_emails or stored.state is State.GREY or (
                stored.state is State.RED and stored.state_reason.startswith(REAUTHORIZE)):
            return []
        driver = self.providers.drivers.get(stored.config.type)
        found = driver.mailbox(stored.config, self.providers.ctx) if driver else None
        return [] if found is None else found if isinstance(found, list) else [found]

    async def close(self) -> None:
        await asyncio.gather(asyncio.to_thread(self.hub.close), asyncio.to_thread(self.pop3.close))

    # -- the hub's and the poller's sink (their threads); keys are mailbox.folder_key
    def position(self, key: str) -> tuple[int | None, int]:
        return self.queue.position(*split_folder_key(key))

    def numbers(self, key: str, uidls: list[str]) -> dict[str, int]:
        return self.queue.pop3_numbers(*split_folder_key(key), uidls)

    def deliver(self, key: str, uidvalidity: int, messages: list[tuple[int, bytes]]) -> None:
        self.queue.commit(*split_folder_key(key), uidvalidity, messages)

    def status(self, key: str, up: bool, reason: str) -> None:
        """A provider is down while any of its folders is."""
        provider_id, _ = split_folder_key(key)
        with self._lock:
            down = self._down.setdefault(provider_id, {})
            if up:
                down.pop(key, None)
            else:
                down[key] = reason
            first = next(iter(down.values()), None)
        call = self._set_state(provider_id, first is None, first or "")
        asyncio.run_coroutine_threadsafe(call, self.loop).result(30)

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

