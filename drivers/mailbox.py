"""What every driver of a mailbox reached over SMTP and IMAP (or POP3) shares:
checking the logins, sending through pooled SMTP connections, watching the inbox
(the built-in inbound sources: IMAP IDLE and POP3 polling).

Subclasses say where the servers are (`servers`) and how to log in (`auth`): a
password (smtp_imap) or an OAuth2 token (outlook, gmail). The transport code is
the same for all of them.
"""
from __future__ import annotations

import asyncio
import hashlib
import threading
from dataclasses import dataclass
from typing import Any, Sequence

from .api import (CheckResult, Driver, DriverContext, Envelope, ErrorCode, InboundSink, InboundSource, Kind,
                  Outcome, ProviderConfig, Report, SendFailure, SendLimits, SettingField)
from .transport.auth import Authenticator
from .transport.endpoint import Endpoint
from .transport.pool import SendError, SmtpPool
from .transport.pop3_poll import Pop3Poller, Pop3Spec
from .transport.probe import probe
from .transport.throttle import LoginThrottle
from .transport.watch import MailboxSpec, WatchHub


@dataclass(frozen=True)
class Servers:
    """Where a provider's mailbox is. `inbound_side`: "imap" or "pop3"."""

    smtp: Endpoint
    inbound: Endpoint | None = None
    inbound_side: str = "imap"
    timeout: float | None = None  # per network operation; None: the server default
    ca_pem: str | None = None  # trusted instead of the system's


# The longest per-operation timeout a provider may set: a check waits at most 4x it (probe).
MAX_TIMEOUT = 60

PLAINTEXT_LOGIN = SettingField(
    "allow_plaintext_login", "Allow login without encryption", Kind.BOOLEAN,
    description="A server whose security is NONE receives the credentials unencrypted: "
                "allowed only when this is on (a server on a network you trust).")


class MailboxDriver(Driver):
    def __init__(self) -> None:
        self.pool = SmtpPool(max_idle_per_key=32)  # at least the outbox's attempts in flight
        self._pool_keys: dict[str, set[str]] = {}  # provider id -> its pool keys
        # provider id -> (config, servers, pool key) derived from that very config object
        self._routes: dict[str, tuple[ProviderConfig, Servers, str]] = {}
        self._lock = threading.Lock()
        self._throttle: LoginThrottle | None = None
        self._receivers: _Receivers | None = None

    def throttle(self, ctx: DriverContext) -> LoginThrottle:
        """Every login of this driver goes through one throttle (made on first use)."""
        with self._lock:
            if self._throttle is None:
                self._throttle = LoginThrottle(base=ctx.login_backoff, cap=ctx.login_backoff_cap)
            return self._throttle

    # -- what subclasses provide
    def servers(self, config: ProviderConfig) -> Servers:
        raise NotImplementedError

    def auth(self, config: ProviderConfig, ctx: DriverContext) -> Authenticator:
        raise NotImplementedError

    # -- input
    def problems(self, config: ProviderConfig, ctx: DriverContext) -> list[tuple[str, str]]:
        if config.settings.get(PLAINTEXT_LOGIN.path):
            return []
        return [(f"settings.{side}.security",
                 f"NONE sends the credentials unencrypted: use STARTTLS or TLS, or turn on "
                 f"{PLAINTEXT_LOGIN.path} for a server on a network you trust")
                for side, ep in config.settings.items() if isinstance(ep, dict) and ep.get("security") == "NONE"]

    # -- checks
    async def validate(self, config: ProviderConfig, ctx: DriverContext) -> Report:
        srv = self.servers(config)
        timeout = srv.timeout or ctx.default_timeout
        auth = self.auth(config, ctx)
        sides = [("smtp", srv.smtp)]
        if config.receive_emails and srv.inbound:
            sides.append((srv.inbound_side, srv.inbound))

        async def run(side: str, ep: Endpoint) -> list[CheckResult]:
            call = ctx.run_blocking(lambda: probe(side, ep, auth, timeout=timeout, ca_pem=srv.ca_pem,
                                                  throttle=self.throttle(ctx)))
            try:
                # Each socket operation has `timeout`; this bounds a server that drips bytes.
                return await asyncio.wait_for(call, timeout * 4 + 1)
            except asyncio.TimeoutError:
                return [CheckResult(f"{side}.session", side, ep.host, ep.port, Outcome.FAILED,
                                    ErrorCode.TIMEOUT, f"no result within {timeout * 4 + 1:.0f} s",
                                    duration=timeout * 4 + 1)]

        results = await asyncio.gather(*(run(side, ep) for side, ep in sides))
        return Report(tuple(c for checks in results for c in checks))

    # -- sending
    def _route(self, config: ProviderConfig, auth: Authenticator) -> tuple[Servers, str]:
        """The servers and the pool key of `config`: a key per provider and connection
        settings, so an update never reuses an old connection. Derived once per config
        object (the outbox sends a provider's mail with the same one until it changes;
        a digest of the CA certificates and a fingerprint per message added up)."""
        pid = str(config.id)
        hit = self._routes.get(pid)
        if hit is not None and hit[0] is config:
            return hit[1], hit[2]
        srv = self.servers(config)
        digest = hashlib.sha256(repr((srv.smtp, auth.fingerprint(), srv.ca_pem)).encode())
        key = f"{config.id}:{digest.hexdigest()[:16]}"
        self._pool_keys.setdefault(pid, set()).add(key)
        self._routes[pid] = (config, srv, key)
        return srv, key

    async def send(self, config: ProviderConfig, envelope: Envelope, ctx: DriverContext) -> str:
        auth = self.auth(config, ctx)
        srv, key = self._route(config, auth)
        try:
            result = await self.pool.send(
                key, srv.smtp, auth, timeout=srv.timeout or ctx.default_timeout, ca_pem=srv.ca_pem,
                mail_from=envelope.mail_from, recipients=list(envelope.recipients), raw=envelope.raw,
                throttle=self.throttle(ctx), run_blocking=ctx.run_blocking, handover=envelope.handover)
        except SendError as e:
            raise SendFailure(e.message, code=e.code, transient=e.transient, auth_failed=e.auth_failed) from None
        refused = "; ".join(f"{r} refused: {c} {m}" for r, (c, m) in result.refused.items())
        return f"{result.code} {result.message}" + (f" ({refused})" if refused else "")

    def sending_limits(self, config: ProviderConfig) -> SendLimits:
        limits = config.settings.get("sending_limits") or {}
        return SendLimits(int(limits.get("per_minute") or 0), int(limits.get("per_day") or 0))

    # -- receiving
    def inbound(self, config: ProviderConfig, ctx: DriverContext, sink: InboundSink) -> InboundSource | None:
        srv = self.servers(config)
        if srv.inbound is None:
            return None
        common = dict(endpoint=srv.inbound, auth=self.auth(config, ctx), ca_pem=srv.ca_pem,
                      timeout=srv.timeout or ctx.default_timeout, poll_interval=ctx.poll_interval)
        pid = str(config.id)
        if srv.inbound_side == "pop3":
            watches = [(Pop3Spec(key=pid, **common), INBOX)]
        else:
            watches = [(MailboxSpec(key=f"{pid}/{folder}", folder=folder, **common), folder)
                       for folder in config.settings.get("folders") or [INBOX]]
        return _MailboxSource(self._receivers_for(ctx), watches, sink, ctx)

    def _receivers_for(self, ctx: DriverContext) -> "_Receivers":
        throttle = self.throttle(ctx)
        with self._lock:
            if self._receivers is None:
                self._receivers = _Receivers(throttle)
            return self._receivers

    async def release(self, provider_id: str) -> None:
        self._routes.pop(provider_id, None)
        for key in self._pool_keys.pop(provider_id, ()):
            self.pool.discard(key)

    async def release_all(self) -> None:
        self.pool.close()
        with self._lock:
            receivers, self._receivers = self._receivers, None
        if receivers is not None:
            await asyncio.to_thread(receivers.close)


INBOX = "INBOX"


class _Receivers:
    """A driver's IMAP watch hub and POP3 poller (one each, for all its providers),
    and where what they report goes: watch key -> (the provider's sink, mailbox)."""

    def __init__(self, throttle: LoginThrottle) -> None:
        self.hub = WatchHub(self, throttle=throttle)
        self.pop3 = Pop3Poller(self, throttle=throttle)
        self._lock = threading.Lock()
        self._routes: dict[str, tuple[InboundSink, str]] = {}

    def add(self, key: str, sink: InboundSink, mailbox: str) -> None:
        with self._lock:
            self._routes[key] = (sink, mailbox)

    def remove(self, key: str) -> None:
        with self._lock:
            self._routes.pop(key, None)

    def _route(self, key: str) -> tuple[InboundSink, str]:
        with self._lock:
            found = self._routes.get(key)
        if found is None:  # a late call for a mailbox no longer watched: nothing is taken
            raise LookupError(f"{key} is not watched")
        return found

    # -- the hub's and the poller's sink (their threads)
    def position(self, key: str) -> tuple[int | None, int]:
        sink, mailbox = self._route(key)
        at = sink.position(mailbox)
        return at.epoch, at.last

    def numbers(self, key: str, uidls: Sequence[str]) -> dict[str, int]:
        sink, mailbox = self._route(key)
        return sink.numbers(mailbox, uidls)

    def deliver(self, key: str, uidvalidity: int, messages: list[tuple[int, bytes]]) -> None:
        sink, mailbox = self._route(key)
        sink.deliver(mailbox, uidvalidity, messages)

    def status(self, key: str, problem: CheckResult | None) -> None:
        if found := self._found(key):
            found[0].status(found[1], problem)

    def reconnecting(self, key: str, problem: CheckResult) -> None:
        if found := self._found(key):
            found[0].reconnecting(found[1], problem)

    def _found(self, key: str) -> tuple[InboundSink, str] | None:
        """Where a report goes; None for a mailbox no longer watched (it says nothing)."""
        with self._lock:
            return self._routes.get(key)

    def close(self) -> None:
        self.hub.close()
        self.pop3.close()


class _MailboxSource(InboundSource):
    """One provider's folders on the IMAP hub, or its POP3 mailbox on the poller."""

    def __init__(self, receivers: _Receivers, watches: list[tuple[MailboxSpec | Pop3Spec, str]],
                 sink: InboundSink, ctx: DriverContext) -> None:
        self._receivers, self._watches, self._sink, self._ctx = receivers, watches, sink, ctx

    def _start(self) -> None:
        for spec, mailbox in self._watches:
            self._receivers.add(spec.key, self._sink, mailbox)
            if isinstance(spec, Pop3Spec):
                self._receivers.pop3.watch(spec)
            else:
                self._receivers.hub.watch(spec)

    def _stop(self) -> None:
        for spec, _ in self._watches:
            if isinstance(spec, Pop3Spec):
                self._receivers.pop3.unwatch(spec.key)
            else:
                self._receivers.hub.unwatch(spec.key)
            self._receivers.remove(spec.key)

    async def start(self) -> None:  # watch and unwatch may wait on the hub's locks: off the loop
        await self._ctx.run_blocking(self._start)

    async def stop(self) -> None:
        await self._ctx.run_blocking(self._stop)


def endpoint(tree: dict[str, Any]) -> Endpoint:
    return Endpoint(tree["host"], int(tree["port"]), tree["security"])
