"""A provider as the server keeps it: its configuration and its lifecycle state."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from mailgate.drivers.api import ProviderConfig


class State(enum.Enum):
    GREY = "GREY"    # not yet activated
    GREEN = "GREEN"  # active
    RED = "RED"      # failed, see reason


class Cause(enum.Enum):
    """Why a provider is in its state. Code branches on the cause; people read the
    reason beside it (server/providers/reasons.py words both)."""

    UNSPECIFIED = "UNSPECIFIED"
    # GREEN
    CHECKS_PASSED = "CHECKS_PASSED"                # created, changed, activated or signed in: checked
    RECOVERED = "RECOVERED"                        # the mailbox is reachable again
    # GREY
    AUTHORIZATION_PENDING = "AUTHORIZATION_PENDING"  # waits for a sign-in (ActivateProvider)
    # RED
    CHECKS_FAILED = "CHECKS_FAILED"                # activation, or the checks after a sign-in, failed
    AUTHORIZATION_FAILED = "AUTHORIZATION_FAILED"  # the sign-in was refused or failed: no tokens kept
    AUTHORIZATION_LOST = "AUTHORIZATION_LOST"      # the OAuth provider refused to renew the tokens
    LOGIN_REFUSED = "LOGIN_REFUSED"                # the SMTP server refused the login while sending
    MAILBOX_UNREACHABLE = "MAILBOX_UNREACHABLE"    # the watched mailbox cannot be reached or logged into

    @property
    def needs_sign_in(self) -> bool:
        """Nothing but a new sign-in helps: the mailbox is not watched meanwhile."""
        return self in (Cause.AUTHORIZATION_FAILED, Cause.AUTHORIZATION_LOST)


@dataclass(frozen=True)
class StoredProvider:
    config: ProviderConfig  # id set, secrets opened
    state: State
    cause: Cause
    state_reason: str
    state_time: datetime
    create_time: datetime
    update_time: datetime
    version: int

    @property
    def id(self) -> str:
        assert self.config.id
        return self.config.id

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


@dataclass(frozen=True)
class Status:
    """A state with its cause and the words for people."""

    state: State
    cause: Cause
    reason: str
