"""Login throttle: do not hammer an account with credentials that just failed.

Mail providers lock accounts (or block the client's IP) after repeated failed
logins. A wrong password saved in a provider would otherwise be retried by every
send, every validation and every IDLE reconnect. After an AUTH_FAILED, the same
(side, host, port, credentials) is not sent to the server again until an
exponentially growing delay has passed; a BACKOFF error is raised instead, before
connecting. New credentials (a corrected password) have another fingerprint and
go through at once. Only AUTH_FAILED counts: timeouts and refused connections are
no lock-out risk.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

from mailgate.drivers.api import ErrorCode

from .auth import Authenticator
from .endpoint import Endpoint
from .errors import TransportError

__all__ = ["LoginThrottle", "default_throttle"]

Key = tuple[str, str, int, str]


@dataclass
class _Failures:
    count: int
    last: float


class LoginThrottle:
    """Thread-safe. Delay after the n-th consecutive failure: min(cap, base * factor**(n-1))."""

    def __init__(self, base: float = 5.0, factor: float = 2.0, cap: float = 900.0,
                 clock: Callable[[], float] = time.monotonic, forget_after: float = 86400.0) -> None:
        self.base, self.factor, self.cap, self.clock = base, factor, cap, clock
        self.forget_after = forget_after  # entries idle this long are dropped (bounded memory)
        self._lock = threading.Lock()
        self._failures: dict[Key, _Failures] = {}

    @staticmethod
    def key(side: str, endpoint: Endpoint, auth: Authenticator) -> Key:
        return (side, endpoint.host.lower(), endpoint.port, auth.fingerprint())

    def delay(self, count: int) -> float:
        return min(self.cap, self.base * self.factor ** (count - 1))

    def check(self, key: Key) -> None:
        """Raises TransportError(BACKOFF) if this key must wait; returns otherwise."""
        with self._lock:
            f = self._failures.get(key)
            if f is None:
                return
            count, ago = f.count, self.clock() - f.last
        remaining = self.delay(count) - ago
        if remaining > 0:
            times = "once" if count == 1 else f"{count} times"
            raise TransportError(
                key[0], "auth", ErrorCode.BACKOFF,
                f"not retried: these credentials failed {times}, last {_secs(ago)} ago; "
                f"next attempt in {_secs(remaining, up=True)}",
                retry_after=remaining)

    def failed(self, key: Key) -> None:
        with self._lock:
            now = self.clock()
            f = self._failures.get(key)
            if f is None:
                self._prune(now)
                self._failures[key] = _Failures(1, now)
            else:
                f.count += 1
                f.last = now

    def succeeded(self, key: Key) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._failures.clear()

    def _prune(self, now: float) -> None:
        if len(self._failures) > 1000:
            for k in [k for k, f in self._failures.items() if now - f.last > self.forget_after]:
                del self._failures[k]


def _secs(seconds: float, up: bool = False) -> str:
    if seconds < 10:
        v = math.ceil(seconds * 10) / 10 if up else round(seconds, 1)
        return f"{v:g} s"
    return f"{math.ceil(seconds) if up else round(seconds)} s"


default_throttle = LoginThrottle()
"""The process-wide throttle used when a caller passes none."""
