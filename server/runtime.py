"""What the server lends drivers: a bounded pool for blocking calls, defaults."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, TypeVar

from mailgate.drivers.api import DriverContext

T = TypeVar("T")


class Runtime(DriverContext):
    def __init__(self, io_workers: int, default_timeout: float, throttle: Any = None, poll_interval: float = 30.0):
        self._pool = ThreadPoolExecutor(max_workers=io_workers, thread_name_prefix="mailgate-io")
        self.default_timeout = default_timeout
        self.poll_interval = poll_interval
        self.throttle = throttle

    def run_blocking(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
