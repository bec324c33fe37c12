"""SMTP-IMAP (or SMTP-POP3) accounts with a password."""
from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
from typing import Any

import imapclient

from ..addresses import is_address
from ..api import (Capabilities, CheckResult, Driver, DriverContext, Envelope, ErrorCode, Kind,
                   Notice, Outcome, ProviderConfig, Report, SendFailure, SendLimits, SettingField)
from ..transport.auth import PasswordAuth
from ..transport.endpoint import Endpoint
from ..transport.imap import connect_imap
from ..transport.pool import SendError, SmtpPool
from ..transport.probe import probe
from ..transport.watch import MailboxSpec
from . import presets

log = logging.getLogger("mailgate.drivers.smtp_imap")

SECURITY = ("STARTTLS", "TLS", "NONE")
PORT = {"kind": Kind.INTEGER, "minimum": 1, "maximum": 65535}
RECEIVING = {"receive_emails": True}


class SmtpImapDriver(Driver):
    type = "smtp_imap"
    display_name = "SMTP / IMAP"
    description = ("A mailbox reached with a user name and password: SMTP to send; IMAP (or "
                   "POP3) to receive when receive_emails is on.")
    capabilities = Capabilities(send=True, receive=True, oauth=False)
    settings_schema = (
        SettingField("username", "User name", description="Login name; defaults to the account."),
        SettingField("password", "Password", secret=True, required=True),
        SettingField("smtp.host", "SMTP server", Kind.HOSTNAME, required=True,
                     description="Filled in for gmail.com, outlook.com, hotmail.com and office365 "
                                 "accounts when left empty."),
        SettingField("smtp.port", "SMTP port", **PORT,
                     description="Default: 587 with STARTTLS, 465 with TLS, 25 with NONE."),
        SettingField("smtp.security", "SMTP security", Kind.ENUM, choices=SECURITY, default="STARTTLS"),
        SettingField("inbound_protocol", "Incoming protocol", Kind.ENUM, choices=("IMAP", "POP3"),
                     default="IMAP"),
        SettingField("inbound.host", "Incoming server", Kind.HOSTNAME, required_when=RECEIVING),
        SettingField("inbound.port", "Incoming port", **PORT,
                     description="Default: IMAP 993 with TLS, 143 otherwise; POP3 995 with TLS, "
                                 "110 otherwise."),
        SettingField("inbound.security", "Incoming security", Kind.ENUM, choices=SECURITY,
                     default="TLS"),
        SettingField("ca_certificates_pem", "Trusted certificates (PEM)", Kind.PEM,
                     description="Trust these instead of the system's, for a private server."),
        SettingField("timeout_seconds", "Timeout (seconds)", Kind.INTEGER, minimum=1, maximum=300,
                     default=10, description="Per network operation."),
        SettingField("sent_folder", "Save sent mail in folder",
                     description="IMAP folder that gets a copy of every message sent (e.g. Sent); "
                                 "empty: none. Uses the incoming (IMAP) settings."),
        SettingField("sending_limits.per_minute", "Messages per minute", Kind.INTEGER, minimum=0,
                     maximum=1_000_000, description="0: no limit. Mail over it waits in the outbox."),
        SettingField("sending_limits.per_day", "Messages per day", Kind.INTEGER, minimum=0,
                     maximum=10_000_000, description="0: no limit. Mail over it waits in the outbox."),
    )

    def __init__(self) -> None:
        self.pool = SmtpPool(max_idle_per_key=32)  # at least the outbox's attempts in flight
        self._pool_keys: dict[str, set[str]] = {}  # provider id -> its pool keys

    # -- input
    def prepare(self, config: ProviderConfig) -> tuple[ProviderConfig, list[Notice]]:
        notices: list[Notice] = []
        settings: dict[str, Any] = copy.deepcopy(dict(config.settings))
        if (config.account and not is_address(config.account) and is_address(config.from_name)
                and not settings.get("username")):
            # The admin screen's habit: login in Account, address in From name.
            notices.append(Notice(
                "LEGACY_ACCOUNT_MAPPED", "account",
                f"Account {config.account!r} is a login name and From name {config.from_name!r} an "
                f"address: stored as username {config.account!r} sending as {config.from_name!r}"))
            settings["username"] = config.account
            config = config.with_(account=config.from_name, from_name="")
        preset = presets.for_account(config.account)
        inbound_side = _inbound_side(settings)
        for side, key in (("smtp", "smtp"), (inbound_side, "inbound")):
            ep = settings.setdefault(key, {})
            if preset and not ep.get("host"):
                known: Endpoint = getattr(preset, side)
                ep.update(host=known.host, port=known.port, security=known.security)
                notices.append(Notice("PRESET_APPLIED", f"settings.{key}",
                                      f"{preset.name} {side.upper()} server filled in: "
                                      f"{known.host}:{known.port} {known.security}"))
            if ep.get("host"):
                ep.setdefault("security", presets.DEFAULT_SECURITY[side])
                if not ep.get("port") and ep["security"] in SECURITY:
                    ep["port"] = presets.DEFAULT_PORTS[side][ep["security"]]
            if not ep:
                del settings[key]
        return config.with_(settings=settings), notices

    # -- checks
    async def validate(self, config: ProviderConfig, ctx: DriverContext) -> Report:
        s = config.settings
        timeout = float(s.get("timeout_seconds") or ctx.default_timeout)
        auth = _auth(config)
        sides = [("smtp", _endpoint(s["smtp"]))]
        if config.receive_emails:
            sides.append((_inbound_side(s), _endpoint(s["inbound"])))

        async def run(side: str, ep: Endpoint) -> list[CheckResult]:
            call = ctx.run_blocking(lambda: probe(side, ep, auth, timeout=timeout,
                                                  ca_pem=s.get("ca_certificates_pem") or None,
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
    async def send(self, config: ProviderConfig, envelope: Envelope, ctx: DriverContext) -> str:
        s = config.settings
        endpoint = _endpoint(s["smtp"])
        auth = _auth(config)
        # A key per provider and connection settings: an update never reuses an old connection.
        digest = hashlib.sha256(repr((endpoint, auth.fingerprint(), s.get("ca_certificates_pem"))).encode())
        key = f"{config.id}:{digest.hexdigest()[:16]}"
        self._pool_keys.setdefault(str(config.id), set()).add(key)
        try:
            result = await ctx.run_blocking(lambda: self.pool.send(
                key, endpoint, auth, timeout=float(s.get("timeout_seconds") or ctx.default_timeout),
                ca_pem=s.get("ca_certificates_pem") or None, mail_from=envelope.mail_from,
                recipients=list(envelope.recipients), raw=envelope.raw, throttle=ctx.throttle))
        except SendError as e:
            raise SendFailure(e.message, code=e.code, transient=e.transient, auth_failed=e.auth_failed) from None
        refused = "; ".join(f"{r} refused: {c} {m}" for r, (c, m) in result.refused.items())
        if s.get("sent_folder"):
            await ctx.run_blocking(self._save_copy, config, envelope.raw, ctx)
        return f"{result.code} {result.message}" + (f" ({refused})" if refused else "")

    def _save_copy(self, config: ProviderConfig, raw: bytes, ctx: DriverContext) -> None:
        """Appends a sent message to the Sent folder. The message is out already:
        a failure here is logged, never turned into a failed send."""
        s = config.settings
        folder = s["sent_folder"]
        try:
            client = connect_imap(_endpoint(s["inbound"]), _auth(config),
                                  timeout=float(s.get("timeout_seconds") or ctx.default_timeout),
                                  ca_pem=s.get("ca_certificates_pem") or None, throttle=ctx.throttle)
            try:
                if not client.folder_exists(folder):
                    client.create_folder(folder)
                client.append(folder, raw, flags=[imapclient.SEEN])
            finally:
                client.logout()
        except Exception as e:  # noqa: BLE001 - any failure: the copy is lost, the mail is not
            log.warning("provider %s: could not save a copy in %r: %s", config.id, folder, e)

    def sending_limits(self, config: ProviderConfig) -> SendLimits:
        limits = config.settings.get("sending_limits") or {}
        return SendLimits(int(limits.get("per_minute") or 0), int(limits.get("per_day") or 0))

    # -- receiving
    def mailbox(self, config: ProviderConfig, ctx: DriverContext) -> MailboxSpec | None:
        s = config.settings
        if _inbound_side(s) != "imap" or "inbound" not in s:
            return None  # POP3 polling is not built yet
        return MailboxSpec(key=str(config.id), endpoint=_endpoint(s["inbound"]), auth=_auth(config),
                           timeout=float(s.get("timeout_seconds") or ctx.default_timeout),
                           ca_pem=s.get("ca_certificates_pem") or None, poll_interval=ctx.poll_interval)

    async def release(self, provider_id: str) -> None:
        for key in self._pool_keys.pop(provider_id, ()):
            self.pool.discard(key)

    async def release_all(self) -> None:
        self.pool.close()


def _auth(config: ProviderConfig) -> PasswordAuth:
    return PasswordAuth(config.settings.get("username") or config.account, config.secrets.get("password", ""))


def _inbound_side(settings: dict[str, Any]) -> str:
    return "pop3" if settings.get("inbound_protocol") == "POP3" else "imap"


def _endpoint(tree: dict[str, Any]) -> Endpoint:
    return Endpoint(tree["host"], int(tree["port"]), tree["security"])
