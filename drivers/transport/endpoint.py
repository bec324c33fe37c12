"""Where a mail server is and how to secure the connection to it."""
from __future__ import annotations

from dataclasses import dataclass

SECURITIES = ("STARTTLS", "TLS", "NONE")


@dataclass(frozen=True)
class Endpoint:
    """A server address. `security`: "STARTTLS" (upgrade a plain connection),
    "TLS" (implicit TLS from the first byte, a.k.a. "SSL") or "NONE"."""

    host: str
    port: int
    security: str

    def __post_init__(self) -> None:
        if self.security not in SECURITIES:
            raise ValueError(f"security must be one of {', '.join(SECURITIES)}, not {self.security!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValueError(f"port must be a number 1-65535, not {self.port!r}")
        if not self.host:
            raise ValueError("host must not be empty")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port} ({self.security})"
