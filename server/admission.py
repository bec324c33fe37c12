"""Admission: how much the calls under way may hold together. The number of calls is
gRPC's own (maximum_concurrent_rpcs, see app.py); the bytes are a ByteBudget."""
from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import AsyncIterator

from .errors import ResourceExhausted


class ByteBudget:
    """A semaphore of bytes, first come first served: `hold(n)` waits up to `wait`
    seconds for n bytes of the total, then refuses with ResourceExhausted (RetryInfo:
    `retry_after`). A single holder may take the whole budget (a charge is cut to it);
    a total of 0 or less admits everything."""

    def __init__(self, total: int, wait: float, what: str, retry_after: float = 1.0):
        self.total, self.wait, self.what, self.retry_after = total, wait, what, retry_after
        self.used = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[None]:
        if self.total <= 0:
            yield
            return
        n = max(0, min(n, self.total))
        await self.acquire(n)
        try:
            yield
        finally:
            self.release(n)

    async def acquire(self, n: int) -> None:
        """Takes n bytes (at most the total; see hold)."""
        if not self._waiting and self.used + n <= self.total:
            self.used += n
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, granted)
        self._waiting.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(granted), self.wait)
        except BaseException as e:
            if granted.done() and not granted.cancelled():  # granted just as we gave up
                self.release(n)
            else:
                granted.cancel()
                with contextlib.suppress(ValueError):
                    self._waiting.remove(entry)
                self._grant()  # those behind us may fit
            if isinstance(e, asyncio.TimeoutError):
                raise ResourceExhausted(
                    f"the server holds as many {self.what} bytes as it may ({self.total:,}); "
                    f"try again in {self.retry_after:g} s", retry_after=self.retry_after,
                    metadata={"limit": "bytes_in_flight"}) from None
            raise

    def release(self, n: int) -> None:
        self.used -= n
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.used + self._waiting[0][0] <= self.total:
            n, granted = self._waiting.popleft()
            if granted.done():
                continue
            self.used += n
            granted.set_result(None)
