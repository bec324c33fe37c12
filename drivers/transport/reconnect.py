"""When a mailbox watcher tries again after failures in a row."""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Reconnect:
    """Exponential backoff with jitter, so that mailboxes that failed together do
    not retry in step, capped so that a mailbox is watched again within `cap`
    seconds of its server coming back. A connection that stayed up `healthy_after`
    seconds starts the count afresh; one that drops right after login keeps
    growing the delay, so such a server is not retried at full speed forever.
    Failed logins wait longer: the LoginThrottle keeps refused credentials away
    from the server on a schedule of its own."""

    base: float = 1.0
    cap: float = 30.0
    healthy_after: float = 60.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base or self.healthy_after < 0:
            raise ValueError("base must be positive, cap >= base, healthy_after >= 0")

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` failures in a row (at least 1)."""
        return min(self.cap, self.base * 2 ** min(failures - 1, 30)) * random.uniform(0.5, 1.0)
