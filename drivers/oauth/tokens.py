"""One provider's access token: handed out while fresh, renewed one at a time.

The OAuth library (MSAL, google-auth) knows *how* to renew; this knows *when*,
and what follows: a rotated refresh token is stored at once (losing it is how
these integrations die after a few weeks), a refusal turns the provider RED,
and a network failure is retried with backoff, never turned into a refusal.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

from ..api import DriverContext
from ..transport.errors import TokenError

log = logging.getLogger("mailgate.drivers.oauth")

# Renew this long before the token expires: a token handed out must outlive the
# login it is used for, whatever the clock skew.
MARGIN = 300.0
ATTEMPTS = 3  # renewals tried per token() call when the token endpoint is unreachable
BACKOFF = 0.5  # seconds, doubled after each failed attempt


@dataclass(frozen=True)
class Grant:
    """What a renewal gave: the token, when it expires (epoch seconds), and the
    secrets that changed (a serialized MSAL cache, a rotated refresh token)."""

    access_token: str
    expires_at: float
    changed_secrets: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Grant(expires_at={self.expires_at!r}, changed={sorted(self.changed_secrets)!r})"


class Tokens:
    """A TokenSource (see transport.auth) for one provider. `renew()` asks the
    token endpoint for a new access token; it raises TokenError."""

    def __init__(self, provider_id: str, renew: Callable[[], Grant], ctx: DriverContext, *,
                 save: bool = True, clock: Callable[[], float] = time.time) -> None:
        self.provider_id, self._renew, self._ctx, self._save, self._clock = provider_id, renew, ctx, save, clock
        self._lock = threading.Lock()  # one renewal at a time per provider
        self._token: str | None = None
        self._expires_at = 0.0
        self.lost: str | None = None  # set once the provider refused: no more attempts
        self._unsaved: dict[str, str] = {}  # renewed secrets the store did not take yet

    def token(self) -> str:
        with self._lock:
            if self._token and self._clock() < self._expires_at - MARGIN:
                return self._token
            if self.lost:
                raise TokenError(self.lost, refused=True)
            grant = self._renew_with_retries()
            if (grant.changed_secrets or self._unsaved) and self._save:
                # Before handing the token out: a rotated refresh token must not be lost.
                # The library has moved on to it already, so what could not be stored now
                # is kept and stored with the next renewal.
                self._unsaved.update(grant.changed_secrets)
                try:
                    self._ctx.save_secrets(self.provider_id, dict(self._unsaved))
                except Exception as e:  # noqa: BLE001 - the store's trouble: retried, never lost
                    log.warning("provider %s: could not store renewed tokens yet: %s", self.provider_id, e)
                    raise TokenError("renewed tokens could not be stored yet", refused=False) from None
                self._unsaved.clear()
            self._token, self._expires_at = grant.access_token, grant.expires_at
            valid_for = grant.expires_at - self._clock()
            log.info("provider %s: access token renewed, valid for %.0f s", self.provider_id, valid_for)
            self._ctx.token_renewed(self.provider_id, valid_for)
            return self._token

    def invalidate(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None

    def _renew_with_retries(self) -> Grant:
        for attempt in range(ATTEMPTS):
            try:
                return self._renew()
            except TokenError as e:
                if e.refused:
                    self.lost = e.message
                    log.warning("provider %s: renewing the access token was refused: %s",
                                self.provider_id, e.message)
                    self._ctx.authorization_lost(self.provider_id, e.message)
                    raise
                if attempt == ATTEMPTS - 1:
                    self._ctx.token_renewal_failed(self.provider_id, e.message)
                    raise
                delay = BACKOFF * 2 ** attempt
                log.info("provider %s: token endpoint unreachable (%s); retrying in %.1f s",
                         self.provider_id, e.message, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")


class Unavailable:
    """The TokenSource of a provider that cannot have tokens now (the server's OAuth
    application is not configured): every call says why."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        self.message, self.refused = message, refused

    def token(self) -> str:
        raise TokenError(self.message, refused=self.refused)

    def invalidate(self, token: str) -> None:
        pass


def NotSignedIn() -> Unavailable:  # noqa: N802 - reads as the state it names
    return Unavailable("not signed in yet: ActivateProvider starts the sign-in", refused=True)
