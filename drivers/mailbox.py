"""What every driver of a mailbox reached over SMTP and IMAP (or POP3) shares:
checking the logins, sending through pooled SMTP connections, watching the inbox.

Subclasses say where the servers are (`servers`) and how to log in (`auth`): a
password (smtp_imap) or an OAuth2 token (outlook, gmail). The transport code is
the same for all of them.
"""
from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

from .api import (CheckResult, Driver, DriverContext, Envelope, ErrorCode, Outcome,
                  ProviderConfig, Report, SendFailure, SendLimits)
from .transport.auth import Authenticator
from .transport.endpoint import Endpoint
from .transport.pool import SendError, SmtpPool
from .transport.probe import probe
from .transport.pop3_poll import Pop3Spec
from .transport.watch import MailboxSpec


@dataclass(frozen=True)
class Servers:
    """Where a provider's mailbox is. `inbound_side`: "imap" or "pop3"."""

    smtp: Endpoint
    inbound: Endpoint | None = None
    inbound_side: str = "imap"
    timeout: float | None = None  # per network operation; None: the server default
    ca_pem: str | None = None  # trusted instead of the system's


class MailboxDriver(Driver):
    def __init__(self) -> None:
        self.pool = SmtpPool(max_idle_per_key=32)  # at least the outbox's attempts in flight
        self._pool_keys: dict[str, set[str]] = {}  # provider id -> its pool keys
        # provider id -> (config, servers, pool key) derived from that very config object
        self._routes: dict[str, tuple[ProviderConfig, Servers, str]] = {}

    # -- what subclasses provide
    def servers(self, config: ProviderConfig) -> Servers:
        raise NotImplementedError

    def auth(self, config: ProviderConfig, ctx: DriverContext) -> Authenticator:
        raise NotImplementedError

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
                                                  throttle=ctx.throttle))
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
                throttle=ctx.throttle, run_blocking=ctx.run_blocking, handover=envelope.handover)
        except SendError as e:
            raise SendFailure(e.message, code=e.code, transient=e.transient, auth_failed=e.auth_failed) from None
        refused = "; ".join(f"{r} refused: {c} {m}" for r, (c, m) in result.refused.items())
        return f"{result.code} {result.message}" + (f" ({refused})" if refused else "")

    def sending_limits(self, config: ProviderConfig) -> SendLimits:
        limits = config.settings.get("sending_limits") or {}
        return SendLimits(int(limits.get("per_minute") or 0), int(limits.get("per_day") or 0))

    # -- receiving
    def mailbox(self, config: ProviderConfig, ctx: DriverContext) -> list[MailboxSpec] | Pop3Spec | None:
        srv = self.servers(config)
        if srv.inbound is None:
            return None
        common = dict(endpoint=srv.inbound, auth=self.auth(config, ctx), ca_pem=srv.ca_pem,
                      timeout=srv.timeout or ctx.default_timeout, poll_interval=ctx.poll_interval)
        if srv.inbound_side == "pop3":
            return Pop3Spec(key=str(config.id), **common)
        return [MailboxSpec(key=folder_key(str(config.id), folder), folder=folder, **common)
                for folder in config.settings.get("folders") or [INBOX]]

    async def release(self, provider_id: str) -> None:
        self._routes.pop(provider_id, None)
        for key in self._pool_keys.pop(provider_id, ()):
            self.pool.discard(key)

    async def release_all(self) -> None:
        self.pool.close()


INBOX = "INBOX"


def folder_key(provider_id: str, folder: str) -> str:
    """The watch key of one folder of a provider: its id for the inbox, `id/folder` otherwise."""
    return provider_id if folder == INBOX else f"{provider_id}/{folder}"


def split_folder_key(key: str) -> tuple[str, str]:
    """A watch key -> (provider id, folder)."""
    provider_id, _, folder = key.partition("/")
    return provider_id, folder or INBOX


def endpoint(tree: dict[str, Any]) -> Endpoint:
    return Endpoint(tree["host"], int(tree["port"]), tree["security"])
