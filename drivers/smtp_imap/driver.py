"""SMTP-IMAP (or SMTP-POP3) accounts with a password."""
from __future__ import annotations

import copy
import logging
from typing import Any

import imapclient

from ..addresses import is_address
from ..api import Capabilities, DriverContext, Envelope, Kind, Notice, ProviderConfig, SettingField
from ..transport.limits import MIN_BYTES_PER_SECOND
from ..mailbox import MAX_TIMEOUT, PLAINTEXT_LOGIN, MailboxDriver, Servers, endpoint
from ..transport import _watchdog
from ..transport.auth import PasswordAuth
from ..transport.endpoint import Endpoint
from ..transport.imap import connect_imap
from . import presets

log = logging.getLogger("mailgate.drivers.smtp_imap")


SECURITY = ("STARTTLS", "TLS", "NONE")
PORT = {"kind": Kind.INTEGER, "minimum": 1, "maximum": 65535}
RECEIVING = {"receive_emails": True}


class SmtpImapDriver(MailboxDriver):
    type = "smtp_imap"
    display_name = "SMTP / IMAP"
    description = ("A mailbox reached with a user name and password: SMTP to send; IMAP (or "
                   "POP3) to receive when receive_emails is on.")
    capabilities = Capabilities(send=True, receive=True, oauth=False, handover=True)
    settings_schema = (
        SettingField("username", "User name", description="Login name; defaults to the account.",
                     max_length=320),
        SettingField("password", "Password", secret=True, required=True, bound_to=(
            "account", "settings.username", "settings.smtp", "settings.inbound_protocol", "settings.inbound",
            "settings.ca_certificates_pem")),
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
        PLAINTEXT_LOGIN,
        SettingField("timeout_seconds", "Timeout (seconds)", Kind.INTEGER, minimum=1, maximum=MAX_TIMEOUT,
                     default=10, description="Per network operation."),
        SettingField("sent_folder", "Save sent mail in folder",
                     description="IMAP folder that gets a copy of every message sent (e.g. Sent); "
                                 "empty: none. Uses the incoming (IMAP) settings."),
        SettingField("folders", "Folders to watch", Kind.STRING_LIST,
                     description="IMAP folders watched for incoming mail; empty: INBOX. POP3 reads "
                                 "the inbox only."),
        SettingField("sending_limits.per_minute", "Messages per minute", Kind.INTEGER, minimum=0,
                     maximum=1_000_000, description="0: no limit. Mail over it waits in the outbox."),
        SettingField("sending_limits.per_day", "Messages per day", Kind.INTEGER, minimum=0,
                     maximum=10_000_000, description="0: no limit. Mail over it waits in the outbox."),
    )

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

    # -- where and how
    def servers(self, config: ProviderConfig) -> Servers:
        s = config.settings
        return Servers(smtp=endpoint(s["smtp"]), inbound=endpoint(s["inbound"]) if "inbound" in s else None,
                       inbound_side=_inbound_side(s), timeout=float(s.get("timeout_seconds") or 0) or None,
                       ca_pem=s.get("ca_certificates_pem") or None)

    def auth(self, config: ProviderConfig, ctx: DriverContext | None = None) -> PasswordAuth:
        return PasswordAuth(config.settings.get("username") or config.account,
                            config.secrets.get("password", ""))

    # -- sending
    async def send(self, config: ProviderConfig, envelope: Envelope, ctx: DriverContext) -> str:
        said = await super().send(config, envelope, ctx)
        if config.settings.get("sent_folder"):
            await ctx.run_blocking(self._save_copy, config, envelope.raw, ctx)
        return said

    def _save_copy(self, config: ProviderConfig, raw: bytes, ctx: DriverContext) -> None:
        """Appends a sent message to the Sent folder. The message is out already:
        a failure here is logged, never turned into a failed send."""
        srv, folder = self.servers(config), config.settings["sent_folder"]
        timeout = srv.timeout or ctx.default_timeout
        try:
            client = connect_imap(srv.inbound, self.auth(config), timeout=timeout,
                                  ca_pem=srv.ca_pem, throttle=self.throttle(ctx))
            # connect_imap's deadline ends with the login: the rest gets one of its own
            # (the upload's time for its size, as the SMTP pool's), or a server dripping
            # its answers one line per socket timeout would hold the worker.
            guard = _watchdog.watch(client.socket(), 3 * timeout + len(raw) / MIN_BYTES_PER_SECOND)
            try:
                if not client.folder_exists(folder):
                    client.create_folder(folder)
                client.append(folder, raw, flags=[imapclient.SEEN])
            finally:
                try:
                    client.logout()
                finally:
                    guard.cancel()
        except Exception as e:  # noqa: BLE001 - any failure: the copy is lost, the mail is not
            log.warning("provider %s: could not save a copy in %r: %s", config.id, folder, e)


def _inbound_side(settings: dict[str, Any]) -> str:
    return "pop3" if settings.get("inbound_protocol") == "POP3" else "imap"

