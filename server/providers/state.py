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


@dataclass(frozen=True)
class StoredProvider:
    config: ProviderConfig  # id set, secrets opened
    state: State
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
