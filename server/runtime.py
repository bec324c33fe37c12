"""What the server lends drivers (drivers.api.DriverContext): a bounded pool for
blocking calls, defaults, their configuration, and the way back to the server from
their worker threads (ProviderCallbacks, run on the server's loop)."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Coroutine, Mapping, TypeVar

from mailgate.drivers.api import DriverContext, ProviderCallbacks

T = TypeVar("T")


class Runtime(DriverContext):
    def __init__(self, callbacks: ProviderCallbacks, *, io_workers: int, default_timeout: float,
                 login_backoff: float, login_backoff_cap: float, poll_interval: float = 30.0,
                 driver_configs: Mapping[str, Mapping[str, Any]] | None = None):
        self._pool = ThreadPoolExecutor(max_workers=io_workers, thread_name_prefix="mailgate-io")
        self._callbacks = callbacks
        self._loop = asyncio.get_running_loop()  # made by the server, on its loop
        self.default_timeout = default_timeout
        self.login_backoff, self.login_backoff_cap = login_backoff, login_backoff_cap
        self.poll_interval = poll_interval
        self._configs = dict(driver_configs or {})

    def driver_config(self, type_: str) -> Mapping[str, Any]:
        return self._configs.get(type_, {})

    def save_secrets(self, provider_id: str, secrets: Mapping[str, str]) -> None:
        self._on_loop(self._callbacks.save_secrets(provider_id, secrets))

    def authorization_lost(self, provider_id: str, message: str) -> None:
        self._on_loop(self._callbacks.authorization_lost(provider_id, message))

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs a coroutine on the server's loop from a worker thread, and waits."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise RuntimeError("called on the event loop: call it from run_blocking work")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    def run_blocking(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
