"""Polling POP3 mailboxes: every `poll_interval`, log in, list the UIDLs, fetch
what the queue has not committed yet, quit. Nothing is deleted or marked.

POP3 has no UIDVALIDITY and no ordered UIDs, only opaque UIDLs. The sink numbers
each UIDL once, in the order the server lists them (`numbers`), and the queue's
mailbox position counts in those numbers: a message is fetched again after a crash
until its number is committed, and never after. A scheduler thread keeps the due
times; a bounded pool does the polls, so thousands of mailboxes need no thread each.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import poplib
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Protocol

from mailgate.drivers.api import CheckResult, ErrorCode

from . import _watchdog
from .auth import Authenticator
from .endpoint import Endpoint
from .errors import TransportError, classify, where
from .limits import MAX_MESSAGE_BYTES, allowance, human
from .pop3 import connect_pop3
from .reconnect import Reconnect
from .throttle import LoginThrottle

log = logging.getLogger("mailgate.pop3")

UIDVALIDITY = 0  # what POP3 messages are queued under (the sink's positions)


@dataclass(frozen=True)
class Pop3Spec:
    """A POP3 mailbox to poll, keyed like a MailboxSpec (the provider id)."""

    key: str
    endpoint: Endpoint
    auth: Authenticator
    timeout: float
    ca_pem: str | None = None
    poll_interval: float = 30.0
    batch: int = 50  # messages fetched per commit


class Pop3Sink(Protocol):
    def position(self, key: str) -> tuple[int | None, int]:
        """(UIDVALIDITY, highest number committed), (None, 0) for a new mailbox."""

    def numbers(self, key: str, uidls: list[str]) -> dict[str, int]:
        """{UIDL: number} for the UIDLs now on the server; new ones get new numbers."""

    def deliver(self, key: str, uidvalidity: int, messages: list[tuple[int, bytes]]) -> None:
        """Commits (number, exact bytes); returns when durable."""

    def status(self, key: str, problem: CheckResult | None) -> None:
        """Reachable (None) or not (the failed step); on changes only."""

    def reconnecting(self, key: str, problem: CheckResult) -> None:
        """A poll failed (the failed step) and is tried again; never blocks."""


class _Box:
    def __init__(self, spec: Pop3Spec) -> None:
        self.spec = spec
        self.stopped = False
        self.failures = 0
        self.problem: CheckResult | None | bool = False  # last status reported (False: none yet)
        self.skipped: set[int] = set()  # numbers (sink.numbers) of messages too large to fetch, logged once


class Pop3Poller:
    def __init__(self, sink: Pop3Sink, *, workers: int = 8, reconnect: Reconnect = Reconnect(),
                 throttle: LoginThrottle | None = None, name: str = "mailgate-pop3",
                 max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._sink, self.reconnect, self._throttle = sink, reconnect, throttle
        self._max_message = max_message_bytes
        self._boxes: dict[str, _Box] = {}
        self._due: list[tuple[float, int, _Box]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{name}-poll")
        self._thread = threading.Thread(target=self._schedule, name=f"{name}-timer", daemon=True)
        self._thread.start()

    # -- public API
    def watch(self, spec: Pop3Spec) -> None:
        """Starts polling spec.key now; with other settings than before, starts over."""
        with self._cond:
            if self._closed:
                raise RuntimeError("Pop3Poller is closed")
            old = self._boxes.get(spec.key)
            if old is not None and old.spec == spec:
                return
            box = _Box(spec)
            if old is not None:
                old.stopped = True
                box.problem = old.problem
            self._boxes[spec.key] = box
            self._at(time.monotonic(), box)

    def unwatch(self, key: str) -> None:
        with self._cond:
            box = self._boxes.pop(key, None)
            if box is not None:
                box.stopped = True

    def close(self) -> None:
        """Stops polling; waits for polls under way (each bounded by its timeouts)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            for box in self._boxes.values():
                box.stopped = True
            self._boxes.clear()
            self._cond.notify()
        self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def stats(self) -> dict:
        with self._cond:
            boxes = list(self._boxes.values())
        return {"watching": len(boxes), "down": sum(1 for b in boxes if isinstance(b.problem, CheckResult))}

    # -- scheduling
    def _at(self, when: float, box: _Box) -> None:  # self._cond held
        heapq.heappush(self._due, (when, next(self._seq), box))
        self._cond.notify()

    def _schedule(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._due and self._due[0][0] <= now:
                    _, _, box = heapq.heappop(self._due)
                    if not box.stopped:
                        self._pool.submit(self._run, box)
                self._cond.wait(self._due[0][0] - now if self._due else None)

    def _run(self, box: _Box) -> None:
        spec = box.spec
        try:
            self._poll(box)
        except Exception as e:  # noqa: BLE001 - every failure is a reason and a retry
            delay = self._failed(box, e)
        else:
            box.failures = 0
            self._status(box, None)
            delay = spec.poll_interval
        with self._cond:
            if not box.stopped and not self._closed:
                self._at(time.monotonic() + delay, box)

    # -- one poll
    def _poll(self, box: _Box) -> None:
        spec = box.spec
        conn = connect_pop3(spec.endpoint, spec.auth, timeout=spec.timeout, ca_pem=spec.ca_pem,
                            throttle=self._throttle)
        try:
            with _deadline(conn, 3 * spec.timeout):
                pairs = [(int(n), uidl.strip()) for n, uidl in _pairs(conn.uidl()[1])]
                sizes = _sizes(conn.list()[1])
            numbers = self._sink.numbers(spec.key, [uidl for _, uidl in pairs])
            validity, last = self._sink.position(spec.key)
            floor = last if validity == UIDVALIDITY else 0
            todo = sorted((numbers[uidl], n) for n, uidl in pairs if numbers[uidl] > floor)
            fetched = 0
            for i in range(0, len(todo), spec.batch):
                messages = []
                for number, n in todo[i:i + spec.batch]:
                    if box.stopped:
                        return
                    size = sizes.get(n)
                    if size is not None and size > self._max_message:  # never downloaded
                        if number not in box.skipped:
                            box.skipped.add(number)
                            log.warning("pop3 %s: message %d not fetched: the server announces %s bytes, over "
                                        "the limit of %s", spec.key, n, f"{size:,}", human(self._max_message))
                        continue
                    allowed = allowance(size, self._max_message) if size is not None else self._max_message
                    # The deadline grows with the bytes that arrive, not with the size listed.
                    with _deadline(conn, 3 * spec.timeout) as guard:
                        messages.append((number, conn.retrieve(n, allowed, guard.credit)))
                if messages:
                    self._sink.deliver(spec.key, UIDVALIDITY, messages)
                    fetched += len(messages)
            if fetched:
                log.info("pop3 %s: %d message(s) fetched", spec.key, fetched)
            with _deadline(conn, 3 * spec.timeout):
                conn.quit()
        finally:
            conn.close()

    # -- failures and status
    def _failed(self, box: _Box, exc: Exception) -> float:
        spec = box.spec
        err = exc if isinstance(exc, TransportError) else classify(
            exc, "pop3", "session", timeout=spec.timeout)
        if not isinstance(exc, (TransportError, OSError, EOFError, poplib.error_proto)):
            log.warning("pop3 %s: unexpected error", spec.key, exc_info=exc)  # a bug of ours, or the sink's
        box.failures += 1
        base = self.reconnect.base
        if err.code is ErrorCode.BACKOFF:  # the throttle said when: no login was attempted
            delay = (err.retry_after or base) + random.uniform(0, base)
        else:
            delay = self.reconnect.delay(box.failures)
        problem = err.check(spec.endpoint.host, spec.endpoint.port)
        # One failed poll may be a blip: down is said when the next attempt fails too.
        # An unreachable token endpoint says nothing about the mailbox.
        if box.failures > 1 and err.code is not ErrorCode.TOKEN_UNAVAILABLE:
            self._status(box, problem)
        log.info("pop3 %s: %s at %s: %s; next attempt in %.1f s", spec.key, problem.id, where(spec.endpoint),
                 problem.server_message, delay)
        if not box.stopped:
            try:
                self._sink.reconnecting(spec.key, problem)
            except Exception:  # noqa: BLE001 - polling goes on; the sink logs its own trouble
                log.warning("pop3 %s: sink.reconnecting failed", spec.key, exc_info=True)
        return delay

    def _status(self, box: _Box, problem: CheckResult | None) -> None:
        if box.stopped or box.problem == problem:
            return
        box.problem = problem
        try:
            self._sink.status(box.spec.key, problem)
        except Exception:  # noqa: BLE001 - polling goes on; the sink logs its own trouble
            log.warning("pop3 %s: sink.status failed", box.spec.key, exc_info=True)


def _pairs(lines: list[bytes]) -> list[list[str]]:
    """A UIDL or LIST listing's lines as [number, rest]."""
    return [line.decode("ascii", "replace").split(" ", 1) for line in lines]


def _sizes(lines: list[bytes]) -> dict[int, int]:
    """LIST's lines ("number octets") as {number: octets}; malformed ones left out."""
    sizes = {}
    for line in lines:
        try:
            n, size = line.split()[:2]
            sizes[int(n)] = int(size)
        except ValueError:
            continue
    return sizes


@contextmanager
def _deadline(conn, seconds: float) -> Iterator[_watchdog.Guard]:
    """An overall limit for commands after login, on top of the per-read socket
    timeout: a server that drips a listing or a message is cut off when it passes
    (the guard's `credit` moves it on as a message arrives)."""
    guard = _watchdog.watch(conn.sock, seconds)
    try:
        yield guard
    except Exception as exc:
        if guard.fired:
            raise _overall_timeout(guard.allowed) from exc
        raise
    finally:
        guard.cancel()
    if guard.fired:
        raise _overall_timeout(guard.allowed)


def _overall_timeout(seconds: float) -> TransportError:
    return TransportError("pop3", "session", ErrorCode.TIMEOUT,
                          f"no complete answer within {seconds:.3g} s (overall limit)")
