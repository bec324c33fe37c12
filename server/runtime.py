"""What the server lends drivers (drivers.api.DriverContext): bounded pools for
blocking calls, defaults, their configuration, and the way back to the server from
their worker threads (ProviderCallbacks, run on the server's loop).

Blocking work a caller waits on (checking credentials: a validation, a creation,
an activation) runs in lanes: one per caller and provider (or candidate's servers).
A lane runs at most PER_LANE calls at once and a caller at most PER_CALLER, in a
pool of their own, so slow or silent servers keep only their own lane waiting:
another caller's checks, or the same caller's of another provider, do not queue
behind their timeouts. The server's own work (sending, watching) has its pool.
"""
from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Awaitable, Callable, Coroutine, Iterator, Mapping, TypeVar

from mailgate.drivers.api import DriverContext, ProviderCallbacks

T = TypeVar("T")

CHECK_WORKERS = 128  # threads for checks: each mostly waits on a socket
PER_LANE, PER_CALLER = 4, 16

_lane: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("mailgate_lane", default=None)


@contextmanager
def lane(caller: str, target: str) -> Iterator[None]:
    """Blocking work started within runs in the lane of `caller` and `target`."""
    token = _lane.set((caller, target))
    try:
        yield
    finally:
        _lane.reset(token)


class Slots:
    """Semaphores by key, made on first use and dropped when nobody holds or awaits one."""

    def __init__(self, size: int):
        self.size = size
        self._by_key: dict[Any, tuple[asyncio.Semaphore, list[int]]] = {}

    async def acquire(self, key: Any) -> None:
        sem, users = self._by_key.setdefault(key, (asyncio.Semaphore(self.size), [0]))
        users[0] += 1
        try:
            await sem.acquire()
        except BaseException:
            self._leave(key)
            raise

    def release(self, key: Any) -> None:
        self._by_key[key][0].release()
        self._leave(key)

    def _leave(self, key: Any) -> None:
        users = self._by_key[key][1]
        users[0] -= 1
        if not users[0]:
            del self._by_key[key]


class Runtime(DriverContext):
    def __init__(self, callbacks: ProviderCallbacks, *, io_workers: int, default_timeout: float,
                 login_backoff: float, login_backoff_cap: float, poll_interval: float = 30.0,
                 driver_configs: Mapping[str, Mapping[str, Any]] | None = None):
        self._pool = ThreadPoolExecutor(max_workers=io_workers, thread_name_prefix="mailgate-io")
        self._checks = ThreadPoolExecutor(max_workers=CHECK_WORKERS, thread_name_prefix="mailgate-check")
        self._lanes, self._callers = Slots(PER_LANE), Slots(PER_CALLER)
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

    def token_renewed(self, provider_id: str, valid_for: float) -> None:
        self._soon(self._callbacks.token_renewed(provider_id, valid_for))

    def token_renewal_failed(self, provider_id: str, message: str) -> None:
        self._soon(self._callbacks.token_renewal_failed(provider_id, message))

    def _soon(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Runs a coroutine on the server's loop, from any thread, without waiting."""
        try:
            asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop is closed: the server is stopping
            coro.close()

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
        key = _lane.get()
        if key is None:
            return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        return asyncio.ensure_future(self._in_lane(key, fn, *args))

    async def _in_lane(self, key: tuple[str, str], fn: Callable[..., T], *args: Any) -> T:
        await self._lanes.acquire(key)
        try:
            await self._callers.acquire(key[0])
        except BaseException:
            self._lanes.release(key)
            raise
        loop = asyncio.get_running_loop()

        def done(_: Future[T]) -> None:  # when the thread ends, not when a waiter gives up on it
            try:
                loop.call_soon_threadsafe(lambda: (self._callers.release(key[0]), self._lanes.release(key)))
            except RuntimeError:  # the loop closed meanwhile (shutdown): nothing waits any more
                pass
        work = self._checks.submit(fn, *args)
        work.add_done_callback(done)
        return await asyncio.wrap_future(work)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._checks.shutdown(wait=False, cancel_futures=True)
