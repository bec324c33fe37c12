"""Mail parsed in worker processes: headers as it is queued, bodies as it is streamed.

Parsing with the standard library's email package is the largest part of what
queueing and streaming a message cost, and it holds the GIL, so in the server's
process it competes with fetching, the store and gRPC. Measured on a burst of
10 KB messages: streaming ran ~60 % faster with bodies not parsed at all. Worker
processes parse on the other cores; the server only moves bytes and results.

With no workers (one core, or MAILGATE_PARSE_WORKERS=0) the parsing runs in the
server's threads. A worker that dies (killed, out of memory) costs nothing but
time: that batch is parsed in the server, and the pool starts again for the next.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Awaitable, Callable

from .parse import Body, Envelope, parse_bodies, parse_envelopes

log = logging.getLogger("mailgate.inbound")


def default_workers() -> int:
    """One core is left to the server's own process."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class ParseWorkers:
    def __init__(self, workers: int, run_blocking: Callable[..., Awaitable[Any]]) -> None:
        self.workers = workers
        self._run_blocking = run_blocking
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # the watchers' threads and the event loop share the pool

    async def bodies(self, raws: list[bytes | None]) -> list[Body | None]:
        """inbound_parse.parse_body of each (None for None), in order."""
        if self.workers:
            pool = self._started()
            try:
                return await asyncio.wrap_future(pool.submit(parse_bodies, raws))
            except BrokenProcessPool:
                self._lost(pool, len(raws))
        return await self._run_blocking(parse_bodies, raws)

    def envelopes(self, raws: list[bytes], max_bytes: int) -> list[Envelope]:
        """inbound_parse.parse_envelope of each, in order. Blocking: from a watcher's thread."""
        if self.workers:
            pool = self._started()
            try:
                return pool.submit(parse_envelopes, raws, max_bytes).result()
            except BrokenProcessPool:
                self._lost(pool, len(raws))
        return parse_envelopes(raws, max_bytes)

    def pids(self) -> list[int]:
        """The worker processes running now (none before the first parse)."""
        with self._lock:
            pool = self._pool
        return [p.pid for p in (pool._processes or {}).values()] if pool is not None else []

    def close(self) -> None:
        """Stops the workers (blocking: from a thread)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _started(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn: a forked copy of a process running gRPC's threads is not safe.
                self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    def _lost(self, pool: ProcessPoolExecutor, count: int) -> None:
        log.warning("a mail parsing process died; parsing %d message(s) here and starting it again", count)
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False)
