"""Server settings: environment variables, overridden by command-line flags."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass
class Settings:
    listen: str = field(default_factory=lambda: _env("MAILGATE_LISTEN", "127.0.0.1:50051"))
    database_url: str = field(default_factory=lambda: _env("MAILGATE_DATABASE_URL", "sqlite:///mailgate.db"))
    key_file: Path = field(default_factory=lambda: Path(_env("MAILGATE_KEY_FILE", "mailgate.key")))
    # per-operation network timeout for mail servers, seconds
    timeout: float = field(default_factory=lambda: float(_env("MAILGATE_TIMEOUT", "10")))
    # bounded pool for blocking protocol calls (smtplib, imapclient, MSAL...)
    io_workers: int = field(default_factory=lambda: int(_env("MAILGATE_IO_WORKERS", "32")))
    # failed logins with the same credentials wait base * 2^(n-1) seconds, up to the cap
    login_backoff: float = field(default_factory=lambda: float(_env("MAILGATE_LOGIN_BACKOFF", "5")))
    login_backoff_cap: float = field(default_factory=lambda: float(_env("MAILGATE_LOGIN_BACKOFF_CAP", "900")))
    # sending: the largest MIME message accepted, and the first retry delay (doubling)
    max_message_bytes: int = field(default_factory=lambda: int(_env("MAILGATE_MAX_MESSAGE_BYTES", str(25 << 20))))
    retry_base: float = field(default_factory=lambda: float(_env("MAILGATE_RETRY_BASE", "30")))
    first_attempt_wait: float = field(default_factory=lambda: float(_env("MAILGATE_FIRST_ATTEMPT_WAIT", "10")))
    # receiving: how often a mailbox without IMAP IDLE is looked at
    poll_interval: float = field(default_factory=lambda: float(_env("MAILGATE_POLL_INTERVAL", "30")))
    log_level: str = field(default_factory=lambda: _env("MAILGATE_LOG_LEVEL", "INFO"))
    grace: float = 10.0  # seconds given to running calls on SIGTERM
