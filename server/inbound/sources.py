"""Keeps a driver's inbound source running for every provider that receives mail,
and is each source's sink: what arrives is committed to the campaign queue before
the source moves its position; a mailbox that goes down turns its provider RED
(MAILBOX_UNREACHABLE), and GREEN again when it comes back.

Which providers are watched: receive_emails on, activated (not GREY), and not
waiting for a new sign-in (AUTHORIZATION_LOST, AUTHORIZATION_FAILED). A RED
provider stays watched otherwise: its source is how it recovers."""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Sequence

from mailgate.drivers.api import CheckResult, DriverContext, InboundSink, InboundSource, Position
from mailgate.drivers.registry import DriverRegistry

from ..providers import reasons
from ..providers.events import ProviderChange
from ..providers.history import EventType, problem_event
from ..providers.records import ProviderRecords
from ..providers.state import Cause, State, StoredProvider
from .queue import InboundQueue

log = logging.getLogger("mailgate.watchers")


def should_watch(stored: StoredProvider) -> bool:
    return (stored.config.receive_emails and stored.state is not State.GREY
            and not stored.cause.needs_sign_in)


class Sources:
    def __init__(self, records: ProviderRecords, drivers: DriverRegistry, ctx: DriverContext, queue: InboundQueue):
        self.records, self.drivers, self.ctx, self.queue = records, drivers, ctx, queue
        self._running: dict[str, InboundSource] = {}  # provider id -> its started source
        self._lock = asyncio.Lock()  # one change at a time: a start never overtakes a stop

    async def start(self) -> None:
        """Watches every receiving provider that should be."""
        for stored in await self.records.receiving():
            await self.provider_changed(ProviderChange(stored.id, stored, config_changed=True))
        log.info("watching %d provider(s)", len(self._running))

    def watching(self) -> int:
        return len(self._running)

    async def provider_changed(self, change: ProviderChange) -> None:
        """A new config restarts the provider's source; a new state starts or stops it."""
        async with self._lock:
            pid, stored = change.provider_id, change.stored
            wanted = stored is not None and should_watch(stored)
            running = self._running.get(pid)
            if running is not None and (change.config_changed or not wanted):
                del self._running[pid]
                await self._stop(pid, running)
                running = None
            if wanted and running is None:
                assert stored is not None
                source = self._source(stored)
                if source is not None:
                    await source.start()
                    self._running[pid] = source

    def _source(self, stored: StoredProvider) -> InboundSource | None:
        driver = self.drivers.get(stored.config.type)
        if driver is None or not driver.capabilities.receive:
            return None
        sink = ProviderSink(stored.id, self.queue, self.records, asyncio.get_running_loop())
        return driver.inbound(stored.config, self.ctx, sink)

    async def _stop(self, provider_id: str, source: InboundSource) -> None:
        try:
            await source.stop()
        except Exception:  # a driver's trouble stopping must not keep others from changing
            log.exception("provider %s: its inbound source failed to stop", provider_id)

    async def close(self) -> None:
        async with self._lock:
            running, self._running = self._running, {}
        await asyncio.gather(*(self._stop(pid, source) for pid, source in running.items()))


class ProviderSink(InboundSink):
    """One provider's sink (drivers.api.InboundSink): the queue's store for
    positions and mail, and the provider's state for reachability. A provider is
    down while any of its mailboxes is."""

    def __init__(self, provider_id: str, queue: InboundQueue, records: ProviderRecords,
                 loop: asyncio.AbstractEventLoop):
        self.provider_id, self.queue, self.records, self.loop = provider_id, queue, records, loop
        self._lock = threading.Lock()
        self._down: dict[str, CheckResult] = {}  # mailbox -> its problem
        self._settling: asyncio.Lock | None = None

    def position(self, mailbox: str) -> Position:
        epoch, last = self.queue.position(self.provider_id, mailbox)
        return Position(epoch, last)

    def numbers(self, mailbox: str, ids: Sequence[str]) -> dict[str, int]:
        return self.queue.pop3_numbers(self.provider_id, mailbox, list(ids))

    def deliver(self, mailbox: str, epoch: int, messages: Sequence[tuple[int, bytes]]) -> None:
        self.queue.commit(self.provider_id, mailbox, epoch, list(messages))

    def status(self, mailbox: str, problem: CheckResult | None) -> None:
        with self._lock:
            if problem is None:
                self._down.pop(mailbox, None)
            else:
                self._down[mailbox] = problem
        try:
            self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._settle()))
        except RuntimeError:  # the server's loop is closed: it is shutting down
            pass

    def reconnecting(self, mailbox: str, problem: CheckResult) -> None:
        self.records.history.record_soon(problem_event(
            self.provider_id, EventType.RECONNECT, problem, reasons.reconnecting(problem, mailbox)))

    async def _settle(self) -> None:
        """Brings the provider's state in line with its mailboxes (in order: one at a time)."""
        if self._settling is None:
            self._settling = asyncio.Lock()
        async with self._settling:
            with self._lock:
                first = next(iter(self._down.items()), None)
            try:
                if first is not None:
                    mailbox, problem = first
                    # Not for a provider waiting for activation or a sign-in.
                    await self.records.set_state(self.provider_id, reasons.mailbox_down(problem, mailbox),
                                                 only_if=lambda state, cause: state is not State.GREY
                                                 and not cause.needs_sign_in)
                else:
                    # GREEN again only if it was the mailbox that made it RED (not, say,
                    # a login refused while sending).
                    await self.records.set_state(self.provider_id, reasons.RECOVERED,
                                                 only_if=lambda state, cause: cause is Cause.MAILBOX_UNREACHABLE)
            except Exception:  # deleted meanwhile, or the store is down: the next change settles it
                log.warning("provider %s: its state could not follow its mailbox", self.provider_id, exc_info=True)
