"""Server settings: environment variables, overridden by command-line flags."""
from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import limits
from .inbound.parse_workers import default_workers as default_parse_workers


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
    # recipients (to + cc + bcc) of one message SendEmail takes
    max_recipients: int = field(default_factory=lambda: int(_env("MAILGATE_MAX_RECIPIENTS",
                                                                  str(limits.DEFAULT_MAX_RECIPIENTS))))
    # admission: calls under way at once (open streams count), beyond which gRPC answers
    # RESOURCE_EXHAUSTED; bytes SendEmail calls under way may hold together; raw mail
    # bytes one claim of a stream reads at once
    max_concurrent_calls: int = field(default_factory=lambda: int(_env(
        "MAILGATE_MAX_CONCURRENT_CALLS", str(limits.DEFAULT_MAX_CONCURRENT_CALLS))))
    send_budget_bytes: int = field(default_factory=lambda: int(_env(
        "MAILGATE_SEND_BUDGET_BYTES", str(limits.DEFAULT_SEND_BUDGET_BYTES))))
    claim_bytes: int = field(default_factory=lambda: int(_env("MAILGATE_CLAIM_BYTES", str(limits.DEFAULT_CLAIM_BYTES))))
    retry_base: float = field(default_factory=lambda: float(_env("MAILGATE_RETRY_BASE", "30")))
    first_attempt_wait: float = field(default_factory=lambda: float(_env("MAILGATE_FIRST_ATTEMPT_WAIT", "10")))
    # how long an outbox commit waits for writes on their way (under load only); 0: never
    commit_delay: float = field(default_factory=lambda: float(_env("MAILGATE_COMMIT_DELAY", "0.001")))
    # seconds a message under an attempt is that attempt's (renewed while it runs); then another may take it
    outbox_lease: float = field(default_factory=lambda: float(_env("MAILGATE_OUTBOX_LEASE", "120")))
    # receiving: how often a mailbox without IMAP IDLE is looked at
    poll_interval: float = field(default_factory=lambda: float(_env("MAILGATE_POLL_INTERVAL", "30")))
    # processes parsing mail (headers when queued, bodies when streamed); 0: in the server's threads
    parse_workers: int = field(default_factory=lambda: int(_env("MAILGATE_PARSE_WORKERS",
                                                                 str(default_parse_workers()))))
    # failed delivery attempts after which inbound mail is dead-lettered (0: never, else 5-100);
    # per campaign in the campaigns file
    dead_letter_after: int = field(default_factory=lambda: int(_env("MAILGATE_DEAD_LETTER_AFTER", "5")))
    campaigns_file: str = field(default_factory=lambda: _env("MAILGATE_CAMPAIGNS_FILE", ""))
    log_level: str = field(default_factory=lambda: _env("MAILGATE_LOG_LEVEL", "INFO"))
    # drivers' server-side configuration (OAuth applications): a TOML file, one
    # [section] per driver type; see docs/providers.md, Configuration
    drivers_config: str = field(default_factory=lambda: _env("MAILGATE_DRIVERS_CONFIG", ""))
    # host:port of the small HTTP listener that receives OAuth redirects; empty: off
    oauth_callback_listen: str = field(default_factory=lambda: _env("MAILGATE_OAUTH_CALLBACK_LISTEN", ""))
    # how long a sign-in started by ActivateProvider can be completed, seconds
    authorization_ttl: float = field(default_factory=lambda: float(_env("MAILGATE_AUTHORIZATION_TTL", "600")))
    # callers present API tokens (docs/security.md); "off" lets anyone who reaches the port do anything
    auth: bool = field(default_factory=lambda: _env("MAILGATE_AUTH", "on") != "off")
    # where the server writes an administrator token on first start; empty: beside the key file
    token_file: str = field(default_factory=lambda: _env("MAILGATE_TOKEN_FILE", ""))
    # listening beyond loopback without TLS and tokens is refused unless the network is trusted
    trusted_network: bool = field(default_factory=lambda: _env("MAILGATE_TRUSTED_NETWORK", "") == "yes")
    # mail servers a caller names: CIDR lists, the longest matching prefix decides
    # (mailgate.drivers.network); MAILGATE_NETWORK_DENY replaces the default list
    network_allow: str = field(default_factory=lambda: _env("MAILGATE_NETWORK_ALLOW", ""))
    network_deny: str | None = field(default_factory=lambda: os.environ.get("MAILGATE_NETWORK_DENY"))
    # TLS: certificate chain and key (PEM files, re-read when they change); empty: plaintext
    tls_cert: str = field(default_factory=lambda: _env("MAILGATE_TLS_CERT", ""))
    tls_key: str = field(default_factory=lambda: _env("MAILGATE_TLS_KEY", ""))
    # CAs whose client certificates are required (mutual TLS); the clients file maps them to principals
    tls_client_ca: str = field(default_factory=lambda: _env("MAILGATE_TLS_CLIENT_CA", ""))
    clients_file: str = field(default_factory=lambda: _env("MAILGATE_CLIENTS_FILE", ""))
    # where audit records go instead of the log (JSON lines, mode 0600); empty: with the log
    audit_file: str = field(default_factory=lambda: _env("MAILGATE_AUDIT_FILE", ""))
    # days a provider's events (ListProviderEvents) are kept
    event_retention_days: float = field(default_factory=lambda: float(_env("MAILGATE_EVENT_RETENTION_DAYS", "30")))
    grace: float = 10.0  # seconds given to running calls on SIGTERM

    @property
    def admin_token_file(self) -> Path:
        return Path(self.token_file) if self.token_file else self.key_file.with_name("mailgate.token")


class ConfigError(ValueError):
    """Server configuration that cannot work; the message says where and why."""


def check_listen(settings: Settings) -> None:
    """`--listen` is host:port with an IP address (or localhost) and a port of
    1-65535 (0: any free one); beyond loopback only with authentication, and with
    TLS or on a network said to be trusted. Never a silent bind elsewhere."""
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ConfigError("MAILGATE_TLS_CERT and MAILGATE_TLS_KEY go together: give both, or neither")
    if settings.tls_client_ca and not settings.tls_cert:
        raise ConfigError("MAILGATE_TLS_CLIENT_CA needs TLS: give MAILGATE_TLS_CERT and MAILGATE_TLS_KEY too")
    host, sep, port = settings.listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen {settings.listen!r}: expected host:port with a port from 1 to 65535, "
                          "e.g. 127.0.0.1:50051 or [::1]:50051")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare == "localhost":
        return
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        raise ConfigError(f"--listen {settings.listen!r}: {host!r} is not an IP address (an IPv6 address "
                          "goes in brackets: [::1]:50051)") from None
    if ":" in bare and not host.startswith("["):
        raise ConfigError(f"--listen {settings.listen!r}: put an IPv6 address in brackets, [{bare}]:{port}")
    if not address.is_loopback and not settings.tls_cert and not settings.trusted_network:
        raise ConfigError(
            f"--listen {settings.listen}: beyond loopback, tokens and mail would cross the network in "
            "plaintext. Give MAILGATE_TLS_CERT and MAILGATE_TLS_KEY; or, with TLS terminated in front of "
            "mailgate, say the network is trusted with --trusted-network (MAILGATE_TRUSTED_NETWORK=yes); "
            "or listen on 127.0.0.1")
    if not address.is_loopback and not settings.auth:
        raise ConfigError(f"--listen {settings.listen}: beyond loopback, authentication must stay on "
                          "(MAILGATE_AUTH=on)")


def read_toml(path: str, setting: str) -> dict[str, Any]:
    """A configuration file the setting `setting` names; ConfigError says what is wrong."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{setting}: cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{setting}: {path} is not valid TOML: {e}") from None


def event_retention(settings: Settings) -> timedelta:
    days = settings.event_retention_days
    if not 0 < days <= 3650:  # NaN too
        raise ConfigError(f"MAILGATE_EVENT_RETENTION_DAYS must be a number of days above 0 and at most 3650, "
                          f"not {days!r}")
    return timedelta(days=days)


DEAD_LETTER_RANGE = (5, 100)  # as Pub/Sub's max_delivery_attempts; 0 turns dead-lettering off


def _dead_letter_after(value: Any, where: str) -> int:
    low, high = DEAD_LETTER_RANGE
    if not isinstance(value, int) or isinstance(value, bool) or not (value == 0 or low <= value <= high):
        raise ConfigError(f"{where}: dead_letter_after must be 0 (never) or from {low} to {high}, not {value!r}")
    return value


def load_campaigns(settings: Settings) -> dict[str, int]:
    """Checks MAILGATE_DEAD_LETTER_AFTER and reads the campaigns file: {campaign: dead_letter_after}.

        [campaigns."sales"]
        dead_letter_after = 10
    """
    _dead_letter_after(settings.dead_letter_after, "MAILGATE_DEAD_LETTER_AFTER")
    path = settings.campaigns_file
    if not path:
        return {}
    data = read_toml(path, "MAILGATE_CAMPAIGNS_FILE")
    out = {}
    for name, section in (data.get("campaigns") or {}).items():
        where = f"MAILGATE_CAMPAIGNS_FILE: {path}: [campaigns.{name!r}]"
        unknown = set(section) - {"dead_letter_after"} if isinstance(section, dict) else {"?"}
        if unknown:
            raise ConfigError(f"{where}: unknown settings {', '.join(sorted(unknown))}; known: dead_letter_after")
        out[name] = _dead_letter_after(section.get("dead_letter_after", settings.dead_letter_after), where)
    return out


def load_drivers_config(path: str) -> dict[str, dict[str, Any]]:
    """The drivers' configuration file: {driver type: its section}."""
    if not path:
        return {}
    data = read_toml(path, "MAILGATE_DRIVERS_CONFIG")
    bad = [k for k, v in data.items() if not isinstance(v, dict)]
    if bad:
        raise ConfigError(f"MAILGATE_DRIVERS_CONFIG: {path}: expected one [section] per driver type, "
                          f"found plain keys {', '.join(bad)}")
    return data
