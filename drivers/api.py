"""The driver contract's types: what a driver is given and what it answers.

A driver is an object implementing `Driver`; drivers reach the server through the
`mailgate_register_drivers` hook (see `mailgate.drivers.spec`). Everything here
is plain Python: drivers know nothing of gRPC or of the store.
"""
from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar

T = TypeVar("T")


class Outcome(enum.Enum):
    PASSED = "PASSED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


class ErrorCode(enum.Enum):
    NONE = "UNSPECIFIED"
    AUTH_FAILED = "AUTH_FAILED"
    CONNECT_FAILED = "CONNECT_FAILED"
    TLS_FAILED = "TLS_FAILED"
    TIMEOUT = "TIMEOUT"
    PROTOCOL_ERROR = "PROTOCOL_ERROR"
    AUTH_UNAVAILABLE = "AUTH_UNAVAILABLE"
    BACKOFF = "BACKOFF"
    AUTHORIZATION_REQUIRED = "AUTHORIZATION_REQUIRED"
    TOKEN_UNAVAILABLE = "TOKEN_UNAVAILABLE"


MAX_SERVER_MESSAGE = 300  # characters of what a server said that a report carries


def excerpt(text: str, limit: int = MAX_SERVER_MESSAGE) -> str:
    """What a server said, fit to show: printable characters only (no terminal escapes,
    no control characters), blanks collapsed, at most `limit` characters."""
    clean = "".join(c if c.isprintable() else " " for c in text[: limit * 4])
    clean = " ".join(clean.split())
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


@dataclass(frozen=True)
class CheckResult:
    """One step of checking a provider, e.g. `smtp.auth`. `server_message` is kept as
    an excerpt (see excerpt): a report never echoes more of a server than that."""

    id: str
    side: str
    host: str
    port: int
    outcome: Outcome
    error_code: ErrorCode = ErrorCode.NONE
    server_message: str = ""
    duration: float = 0.0  # seconds
    retry_after: float | None = None  # seconds, for BACKOFF

    def __post_init__(self) -> None:
        if self.server_message:
            object.__setattr__(self, "server_message", excerpt(self.server_message))

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED


@dataclass(frozen=True)
class Report:
    checks: tuple[CheckResult, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(c.failed for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.failed]


@dataclass(frozen=True)
class Capabilities:
    send: bool = False
    receive: bool = False
    oauth: bool = False
    # The driver's send honours Envelope.handover. Without it, the outbox starts an
    # attempt only once the message is stored.
    handover: bool = False


class Kind(enum.Enum):
    STRING = "STRING"
    INTEGER = "INTEGER"
    BOOLEAN = "BOOLEAN"
    ENUM = "ENUM"
    HOSTNAME = "HOSTNAME"
    EMAIL = "EMAIL"
    PEM = "PEM"
    STRING_LIST = "STRING_LIST"


@dataclass(frozen=True)
class SettingField:
    """One field of a driver's settings form; `path` is dotted for nested fields.

    `required_when` maps a field path to the value that makes this one required;
    paths without a dot name Provider fields (`receive_emails`).
    """

    path: str
    label: str
    kind: Kind = Kind.STRING
    description: str = ""
    required: bool = False
    required_when: Mapping[str, Any] = field(default_factory=dict)
    choices: tuple[str, ...] = ()
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    secret: bool = False
    # Text kinds: at most this many characters. None: the server's limit for the kind
    # (docs/security.md, Caller input); a smaller one here wins.
    max_length: int | None = None
    # For a secret: the Provider fields and settings paths (prefixes: `settings.smtp`
    # covers `settings.smtp.host`) that say where the secret is presented. The server
    # never presents a stored secret after one of them changed: the change must bring
    # the secret again in the same request.
    bound_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class Notice:
    """How the server interpreted input (a preset applied, a legacy habit mapped)."""

    code: str
    field: str
    message: str


@dataclass(frozen=True)
class ProviderConfig:
    """A provider as a driver sees it: common fields plus its own settings.

    `settings` holds the driver's non-secret settings as nested dicts;
    `secrets` the secret ones (passwords, tokens) in clear, in memory only.
    """

    type: str
    account: str
    display_name: str = ""
    from_name: str = ""
    receive_emails: bool = False
    active_reference: bool = False
    reply_to: tuple[str, ...] = ()
    campaign: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    id: str | None = None

    def with_(self, **changes: Any) -> "ProviderConfig":
        return replace(self, **changes)

    def __repr__(self) -> str:  # secrets never reach a log through repr
        return (f"ProviderConfig(id={self.id!r}, type={self.type!r}, account={self.account!r}, "
                f"secrets={sorted(self.secrets)!r})")


@dataclass(frozen=True)
class Authorization:
    """An OAuth sign-in a driver started. The server sends the administrator to
    `uri`, keeps `flow` sealed until the redirect comes back with `state`, then
    hands both to `Driver.complete_authorization`."""

    uri: str
    state: str
    flow: Mapping[str, Any]  # the driver's private data: PKCE verifier, nonce...

    def __repr__(self) -> str:  # the flow holds the PKCE verifier
        return f"Authorization(uri={self.uri!r})"


@dataclass(frozen=True)
class Activation:
    """What activation decided: a report, or (OAuth) an authorization to follow."""

    report: Report | None = None
    authorization: Authorization | None = None


@dataclass(frozen=True)
class Authorized:
    """A completed sign-in: who signed in (from a verified ID token or profile)
    and the secrets to store (tokens). The server checks `account` against the
    provider's account before storing anything."""

    account: str
    secrets: Mapping[str, str]

    def __repr__(self) -> str:
        return f"Authorized(account={self.account!r}, secrets={sorted(self.secrets)!r})"


class AuthorizationFailed(Exception):
    """The sign-in could not be completed (code refused, ID token invalid).
    The message is shown to the administrator: the provider's words, no token."""


class NotConfigured(Exception):
    """The server lacks configuration the driver needs (an OAuth application):
    the message says what to set."""


@dataclass(frozen=True)
class Envelope:
    """A message ready to go: the SMTP envelope (bare addresses: no display names,
    no angle brackets) and the exact MIME bytes."""

    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes
    # For drivers with Capabilities.handover: awaited before the message is handed
    # over, i.e. before the step that makes the server take responsibility for it
    # (SMTP: the final dot of DATA; the envelope and the content may go before). If it
    # raises, the driver abandons the transaction so that the server takes nothing,
    # and lets the exception through. The outbox makes the first attempt while the
    # message is being committed: the SMTP round trips overlap the commit, and no
    # server accepts a message before it is durable (bench/send_path.py measures the
    # send path with the first attempt after the commit instead).
    handover: Callable[[], Awaitable[None]] | None = None


class SendFailure(Exception):
    """A message did not go out. `transient`: a later attempt may work (4xx,
    connection lost). `auth_failed`: the mailbox refused the login; the provider
    turns RED and its mail waits until it is GREEN again."""

    def __init__(self, message: str, *, code: int = 0, transient: bool = True,
                 auth_failed: bool = False):
        super().__init__(message)
        self.message, self.code, self.transient, self.auth_failed = message, code, transient, auth_failed


@dataclass(frozen=True)
class SendLimits:
    """What the mailbox's operator allows; 0 means no limit. Mail over a limit
    waits in the outbox instead of failing or getting the account blocked."""

    per_minute: int = 0
    per_day: int = 0


class ProviderCallbacks(ABC):
    """What a driver tells the server about one of its providers, unasked. The
    server implements it; drivers reach it through DriverContext (from worker
    threads) as `save_secrets` and `authorization_lost`."""

    @abstractmethod
    async def save_secrets(self, provider_id: str, secrets: Mapping[str, str]) -> None:
        """Stores renewed secrets (a rotated refresh token) at once."""

    @abstractmethod
    async def authorization_lost(self, provider_id: str, message: str) -> None:
        """The OAuth provider refused to renew the tokens: only a new sign-in helps."""

    async def token_renewed(self, provider_id: str, valid_for: float) -> None:
        """An access token was renewed, valid for `valid_for` seconds (the provider's history)."""

    async def token_renewal_failed(self, provider_id: str, message: str) -> None:
        """Renewing an access token failed for a reason a later attempt may not have
        (the token endpoint unreachable): the provider's history."""


@dataclass(frozen=True)
class Position:
    """How far a mailbox has been committed to the queue: `epoch` (IMAP's
    UIDVALIDITY; sources without one use 0; None: nothing committed yet) and the
    highest message number committed in that epoch."""

    epoch: int | None = None
    last: int = 0


class InboundSink(ABC):
    """Where a source hands the mail of its provider. One per provider; a mailbox is
    a name the source chooses (an IMAP folder; "INBOX" when there is one).

    Blocking and thread-safe: call it from the source's own threads or through
    `ctx.run_blocking`, never from the event loop (`status` excepted). Messages are
    numbered within an epoch, ascending; sources whose messages carry opaque ids
    (POP3 UIDLs, file names) get stable numbers from `numbers`."""

    @abstractmethod
    def position(self, mailbox: str) -> Position:
        """Where to resume: the position of the last `deliver` that returned."""

    @abstractmethod
    def numbers(self, mailbox: str, ids: Sequence[str]) -> dict[str, int]:
        """A stable number for each opaque id, in the order given: ids seen before
        keep theirs, new ones are numbered above every number given before. Ids
        no longer given are forgotten (their messages are gone from the source)."""

    @abstractmethod
    def deliver(self, mailbox: str, epoch: int, messages: Sequence[tuple[int, bytes]]) -> None:
        """Commits (number, exact RFC 5322 bytes), ascending, to the provider's
        campaign queue and moves the mailbox's position to the highest number, in one
        transaction; returns once durable. Only then may the source move its own
        position (acknowledge, delete, mark). If it raises, nothing was committed:
        hand the messages again later. A message handed twice is queued once."""

    @abstractmethod
    def status(self, mailbox: str, problem: CheckResult | None) -> None:
        """The mailbox is reachable (None) or not: `problem` is the failed step (a
        FAILED CheckResult: side, host, port, error code, the server's words). The
        server turns the provider RED or GREEN again and words the reason. Call it
        on changes; it never blocks."""

    def reconnecting(self, mailbox: str, problem: CheckResult) -> None:
        """The mailbox's connection failed or dropped (`problem`: the failed step)
        and the source tries again: call it at every retry, quiet ones included
        (those that do not turn the provider RED). The server counts them in the
        provider's history, coalesced. It never blocks."""


class InboundSource(ABC):
    """A provider's incoming mail, watched the driver's way (IMAP IDLE, POP3
    polling, an API, a spool directory). The server starts it once, when the
    provider is to be watched, and stops it once, when it is not any more or when
    the server stops. Both return promptly; what arrives goes to the sink given to
    `Driver.inbound`."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...


class DriverContext(ABC):
    """What the server lends a driver: bounded pools for blocking work and defaults."""

    default_timeout: float = 10.0
    # how often a mailbox whose server has no IMAP IDLE is looked at, seconds
    poll_interval: float = 30.0
    # failed logins with the same credentials wait base * 2^(n-1) seconds, up to the cap
    login_backoff: float = 5.0
    login_backoff_cap: float = 900.0

    def driver_config(self, type_: str) -> Mapping[str, Any]:
        """The server's configuration section for a driver type (e.g. an OAuth
        application's client id and secret); empty when there is none."""
        return {}

    def save_secrets(self, provider_id: str, secrets: Mapping[str, str]) -> None:
        """ProviderCallbacks.save_secrets, without changing the provider's version.
        Blocking: call it from `run_blocking` work."""
        raise NotImplementedError

    def authorization_lost(self, provider_id: str, message: str) -> None:
        """ProviderCallbacks.authorization_lost: the server turns the provider RED
        (AUTHORIZATION_LOST), stops watching its mailbox and keeps its mail.
        Blocking: call it from `run_blocking` work."""
        raise NotImplementedError

    def token_renewed(self, provider_id: str, valid_for: float) -> None:
        """ProviderCallbacks.token_renewed. Never blocks; from any thread."""

    def token_renewal_failed(self, provider_id: str, message: str) -> None:
        """ProviderCallbacks.token_renewal_failed. Never blocks; from any thread."""

    @abstractmethod
    def run_blocking(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        """Runs a blocking call (smtplib, imapclient, MSAL...) in the bounded worker pool."""


class Driver(ABC):
    """A provider type. Subclass it, fill the class attributes, implement the
    coroutines, and register an instance from `mailgate_register_drivers`."""

    type: str
    display_name: str
    description: str = ""
    capabilities: Capabilities = Capabilities()
    settings_schema: tuple[SettingField, ...] = ()

    def prepare(self, config: ProviderConfig) -> tuple[ProviderConfig, list[Notice]]:
        """Fills defaults and maps legacy input before fields are validated.
        Returns the config to validate and store, and what was changed."""
        return config, []

    def problems(self, config: ProviderConfig, ctx: DriverContext) -> list[tuple[str, str]]:
        """Rules across fields that the settings schema cannot state, as (path,
        problem) pairs; called once every schema rule holds. Default: none."""
        return []

    def needs_recheck(self, changed_paths: set[str]) -> bool:
        """True when changing these paths (Provider fields and `settings.`/`secrets.`
        paths) needs the credentials checked again. Default: any settings change."""
        return any(p.startswith(("settings.", "secrets.")) or p in {"account", "receive_emails"}
                   for p in changed_paths)

    @abstractmethod
    async def validate(self, config: ProviderConfig, ctx: DriverContext) -> Report:
        """Checks the provider against its servers. Never raises for a server's
        failure: every failure is a FAILED check in the report."""

    async def activate(self, config: ProviderConfig, ctx: DriverContext) -> Activation:
        """Makes the provider usable. Default: the validation report decides."""
        return Activation(report=await self.validate(config, ctx))

    async def complete_authorization(self, config: ProviderConfig, flow: Mapping[str, Any],
                                     response: Mapping[str, str], ctx: DriverContext) -> Authorized:
        """Finishes a sign-in this driver started in `activate`: `flow` as the driver
        returned it, `response` the redirect's query parameters (state, code...).
        Raises AuthorizationFailed. Drivers with capabilities.oauth implement it."""
        raise AuthorizationFailed(f"the {self.type} driver does not sign in with OAuth")

    async def send(self, config: ProviderConfig, envelope: Envelope, ctx: DriverContext) -> str:
        """Hands one message to the provider's server; returns the server's words of
        acceptance. Raises SendFailure. Drivers with capabilities.send implement it."""
        raise SendFailure(f"the {self.type} driver cannot send", transient=False)

    def sending_limits(self, config: ProviderConfig) -> SendLimits:
        return SendLimits()

    def inbound(self, config: ProviderConfig, ctx: DriverContext, sink: InboundSink) -> InboundSource | None:
        """The source that watches the provider's incoming mail and hands it to
        `sink`, not started yet; None when this provider receives nothing. Called
        for providers with receive_emails on, by drivers with capabilities.receive."""
        return None

    async def release(self, provider_id: str) -> None:
        """Drops what the driver keeps for a provider (pooled connections) after it
        changed or was deleted."""

    async def release_all(self) -> None:
        """Drops everything it keeps (server shutdown)."""
