"""Message bodies parsed for the stream in worker processes.

Parsing a body with the standard library's email package is the largest part of
what streaming a message costs (measured: a burst of 10 KB messages streams ~60 %
faster when bodies are not parsed at all), and it holds the GIL, so in the
server's process it competes with fetching, the store and gRPC. Worker processes
parse on the other cores; the server only builds the responses.

With no workers (one core, or MAILGATE_PARSE_WORKERS=0) bodies are parsed in the
server's worker threads as before. A worker that dies (killed, out of memory)
costs nothing but time: those bodies are parsed in the server, and the pool is
started again for the next ones.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Awaitable, Callable

from .inbound_parse import Body, parse_bodies

log = logging.getLogger("mailgate.inbound")


def default_workers() -> int:
    """One core is left to the server's own process."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class BodyParsers:
    def __init__(self, workers: int, run_blocking: Callable[..., Awaitable[Any]]) -> None:
        self.workers = workers
        self._run_blocking = run_blocking
        self._pool: ProcessPoolExecutor | None = None

    async def parse(self, raws: list[bytes]) -> list[Body]:
        """The bodies of `raws`, in order (inbound_parse.parse_body of each)."""
        if not self.workers:
            return await self._run_blocking(parse_bodies, raws)
        pool = self._start()
        try:
            return await asyncio.wrap_future(pool.submit(parse_bodies, raws))
        except BrokenProcessPool:
            log.warning("a body parsing process died; parsing %d message(s) here and starting it again",
                        len(raws))
            if self._pool is pool:
                self._pool = None
            pool.shutdown(wait=False)
            return await self._run_blocking(parse_bodies, raws)

    def close(self) -> None:
        """Stops the workers (blocking: from a thread)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: a forked copy of a process running gRPC's threads is not safe.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool
