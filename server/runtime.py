"""What the server lends drivers: a bounded pool for blocking calls, defaults,
their configuration, and a way back to the store from their worker threads."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, Mapping, TypeVar

from mailgate.drivers.api import DriverContext

if TYPE_CHECKING:
    from .providers.lifecycle import Providers

T = TypeVar("T")


class Runtime(DriverContext):
    def __init__(self, io_workers: int, default_timeout: float, throttle: Any = None, poll_interval: float = 30.0,
                 driver_configs: Mapping[str, Mapping[str, Any]] | None = None):
        self._pool = ThreadPoolExecutor(max_workers=io_workers, thread_name_prefix="mailgate-io")
        self.default_timeout = default_timeout
        self.poll_interval = poll_interval
        self.throttle = throttle
        self._configs = dict(driver_configs or {})
        self._providers: Providers | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, providers: "Providers", loop: asyncio.AbstractEventLoop) -> None:
        self._providers, self._loop = providers, loop

    def driver_config(self, type_: str) -> Mapping[str, Any]:
        return self._configs.get(type_, {})

    def save_secrets(self, provider_id: str, secrets: Mapping[str, str]) -> None:
        assert self._providers
        self._on_loop(self._providers.save_secrets(provider_id, secrets))

    def authorization_lost(self, provider_id: str, message: str) -> None:
        assert self._providers
        self._on_loop(self._providers.authorization_lost(provider_id, message))

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs a coroutine on the server's loop from a worker thread, and waits."""
        assert self._loop
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
