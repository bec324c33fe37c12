"""What the outlook and gmail drivers share: settings, where the servers are,
the sign-in's shape, and one token source per provider.

A subclass brings the OAuth library: how to start a sign-in, finish it, and renew
a token (delegated, or app-only for shared mailboxes).
"""
from __future__ import annotations

import contextlib
import copy
import threading
import uuid
from typing import Any, Callable, Iterator, Mapping

import requests

from ..api import (Activation, Authorization, AuthorizationFailed, Authorized, Capabilities, CheckResult,
                   DriverContext, Kind, Notice, NotConfigured, Outcome, ProviderConfig, Report, SettingField)
from ..mailbox import MAX_TIMEOUT, PLAINTEXT_LOGIN, MailboxDriver, Servers, endpoint
from ..smtp_imap.presets import DEFAULT_PORTS, DEFAULT_SECURITY, Preset
from ..transport.auth import TokenSource, XOAuth2Auth
from ..transport.errors import TokenError
from .tokens import Grant, NotSignedIn, Tokens, Unavailable

SECURITY = ("STARTTLS", "TLS", "NONE")
PORT = {"kind": Kind.INTEGER, "minimum": 1, "maximum": 65535}
AUTHORIZATION_ID = "authorization_id"  # secret naming the sign-in the tokens come from
APP_ONLY = "APP_ONLY"
# What a discovery document must name: the ID token's issuer is always checked.
DISCOVERY_FIELDS = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")


class OAuthDriver(MailboxDriver):
    """Subclasses set `type`, `display_name`, `preset` and implement the four
    library methods below."""

    preset: Preset
    mail_hosts_default: tuple[str, ...] = ()  # the service's own servers: where its tokens may go
    capabilities = Capabilities(send=True, receive=True, oauth=True, handover=True)
    # Secrets the sign-in stores; an account change drops them all.
    token_secrets: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self._tokens: dict[str, tuple[str, Tokens]] = {}  # provider id -> (identity, source)
        self._lock = threading.Lock()
        self._sessions: dict[str, requests.Session] = {}
        self._discovered: dict[str, Mapping[str, Any]] = {}  # discovery URL -> document

    @property
    def settings_schema(self) -> tuple[SettingField, ...]:  # type: ignore[override]
        p = self.preset
        return (
            SettingField("access", "Access", Kind.ENUM, choices=("DELEGATED", APP_ONLY), default="DELEGATED",
                         description="DELEGATED: someone signs in as the account. APP_ONLY: the server's "
                                     "application acts for the mailbox (shared mailboxes; the tenant "
                                     "administrator consents once)."),
            SettingField("smtp.host", "SMTP server", Kind.HOSTNAME, default=p.smtp.host),
            SettingField("smtp.port", "SMTP port", **PORT, default=p.smtp.port),
            SettingField("smtp.security", "SMTP security", Kind.ENUM, choices=SECURITY, default=p.smtp.security),
            SettingField("imap.host", "IMAP server", Kind.HOSTNAME, default=p.imap.host),
            SettingField("imap.port", "IMAP port", **PORT, default=p.imap.port),
            SettingField("imap.security", "IMAP security", Kind.ENUM, choices=SECURITY, default=p.imap.security),
            SettingField("timeout_seconds", "Timeout (seconds)", Kind.INTEGER, minimum=1, maximum=MAX_TIMEOUT,
                         default=10, description="Per network operation."),
            SettingField("sending_limits.per_minute", "Messages per minute", Kind.INTEGER, minimum=0,
                         maximum=1_000_000, description="0: no limit. Mail over it waits in the outbox."),
            SettingField("sending_limits.per_day", "Messages per day", Kind.INTEGER, minimum=0,
                         maximum=10_000_000, description="0: no limit. Mail over it waits in the outbox."),
            SettingField("folders", "Folders to watch", Kind.STRING_LIST,
                         description="IMAP folders watched for incoming mail; empty: INBOX."),
            SettingField("ca_certificates_pem", "Trusted certificates (PEM)", Kind.PEM,
                         description="Trust these instead of the system's for the mail servers."),
            PLAINTEXT_LOGIN,
        )

    # -- what a subclass provides (blocking; they run in the worker pool)
    def start(self, config: ProviderConfig, app: Mapping[str, Any]) -> Authorization:
        raise NotImplementedError

    def finish(self, config: ProviderConfig, app: Mapping[str, Any], flow: Mapping[str, Any],
               response: Mapping[str, str]) -> Authorized:
        raise NotImplementedError

    def delegated(self, config: ProviderConfig, app: Mapping[str, Any]) -> Callable[[], Grant]:
        """A renewal function from the stored tokens in `config.secrets`."""
        raise NotImplementedError

    def app_only(self, config: ProviderConfig, app: Mapping[str, Any]) -> Callable[[], Grant]:
        """A renewal function acting for `config.account` without a sign-in."""
        raise NotImplementedError

    # -- input
    def prepare(self, config: ProviderConfig) -> tuple[ProviderConfig, list[Notice]]:
        settings: dict[str, Any] = copy.deepcopy(dict(config.settings))
        for side, known in (("smtp", self.preset.smtp), ("imap", self.preset.imap)):
            ep = settings.setdefault(side, {})
            if not ep.get("host"):
                ep.update(host=known.host, port=known.port, security=known.security)
            ep.setdefault("security", DEFAULT_SECURITY[side])
            if not ep.get("port"):
                ep["port"] = DEFAULT_PORTS[side][ep["security"]]
        return config.with_(settings=settings), []

    def problems(self, config: ProviderConfig, ctx: DriverContext) -> list[tuple[str, str]]:
        """Tokens go only to the service's own mail servers and those the server's
        configuration adds: a caller cannot have them sent to a host of its choice."""
        allowed = self.mail_hosts(ctx)
        found = super().problems(config, ctx)
        if config.settings.get("access") == APP_ONLY:
            refusal = self.app_only_refusal(config.account, ctx)
            if refusal:
                found.append(("account", refusal))
        for side in ("smtp", "imap"):
            host = str(config.settings[side]["host"]).lower().rstrip(".")
            if host not in allowed:
                found.append((f"settings.{side}.host", (
                    f"{host!r} is not one of the mail servers this provider's tokens may go to: "
                    f"{', '.join(sorted(allowed))} (add it to mail_hosts in the [{self.type}] section of "
                    f"the drivers configuration)")))
        return found

    def app_only_refusal(self, account: str, ctx: DriverContext) -> str | None:
        """Why app-only access may not act for `account` (None: it may). An app-only
        token opens every mailbox of the tenant: `allowed_accounts` in the driver's
        section of the drivers configuration limits the accounts a provider may name,
        as addresses and `*@domain` entries; without it, any account."""
        allowed = ctx.driver_config(self.type).get("allowed_accounts")
        if allowed is None:
            return None
        entries = [allowed] if isinstance(allowed, str) else list(allowed)
        for entry in entries:
            local, at, domain = entry.partition("@") if isinstance(entry, str) else ("", "", "")
            if not (at and local and domain) or "@" in domain or "*" in domain or ("*" in local and local != "*"):
                raise NotConfigured(f"allowed_accounts in the [{self.type}] section of the drivers "
                                    f"configuration: {entry!r} is neither an address nor *@domain")
        local, _, domain = account.casefold().rpartition("@")
        for entry in entries:
            e_local, _, e_domain = entry.casefold().partition("@")
            if e_domain == domain and e_local in ("*", local):
                return None
        return (f"app-only access acts only for the accounts this server allows: {', '.join(entries)} "
                f"(allowed_accounts in the [{self.type}] section of the drivers configuration)")

    def mail_hosts(self, ctx: DriverContext) -> set[str]:
        added = ctx.driver_config(self.type).get("mail_hosts", ())
        hosts = (*self.mail_hosts_default, *([added] if isinstance(added, str) else added))
        return {str(h).lower().rstrip(".") for h in hosts}

    def needs_recheck(self, changed_paths: set[str]) -> bool:
        # An account change is handled by the server (tokens dropped, GREY).
        return any(p.startswith("settings.") or p == "receive_emails" for p in changed_paths)

    # -- where and how
    def servers(self, config: ProviderConfig) -> Servers:
        s = config.settings
        return Servers(smtp=endpoint(s["smtp"]), inbound=endpoint(s["imap"]), inbound_side="imap",
                       timeout=float(s.get("timeout_seconds") or 0) or None,
                       ca_pem=s.get("ca_certificates_pem") or None)

    def auth(self, config: ProviderConfig, ctx: DriverContext) -> XOAuth2Auth:
        identity, source = self._source(config, ctx)
        return XOAuth2Auth(config.account, source, identity)

    def _source(self, config: ProviderConfig, ctx: DriverContext) -> tuple[str, TokenSource]:
        app_only = config.settings.get("access") == APP_ONLY
        identity = APP_ONLY if app_only else config.secrets.get(AUTHORIZATION_ID, "")
        if not identity:
            return "", NotSignedIn()
        pid = str(config.id)
        with self._lock:
            known = self._tokens.get(pid)
            if known and known[0] == identity:
                return known
            try:
                app = self.app_config(ctx)
                refusal = self.app_only_refusal(config.account, ctx) if app_only else None
                if refusal:  # allowed_accounts changed since the provider was stored
                    return identity, Unavailable(refusal, refused=True)
                renew = self.app_only(config, app) if app_only else self.delegated(config, app)
            except NotConfigured as e:  # not kept: the next call looks again
                return identity, Unavailable(str(e))
            known = identity, Tokens(pid, renew, ctx, save=not app_only)
            self._tokens[pid] = known
            return known

    async def validate(self, config: ProviderConfig, ctx: DriverContext) -> Report:
        if not (config.settings.get("access") == APP_ONLY or config.secrets.get(AUTHORIZATION_ID)):
            # Nothing to log in with yet: say so rather than fail a login nobody could pass.
            srv = self.servers(config)
            sides = [("smtp", srv.smtp)] + ([("imap", srv.inbound)] if config.receive_emails else [])
            return Report(tuple(CheckResult(f"{side}.auth", side, ep.host, ep.port, Outcome.SKIPPED,
                                            server_message="not signed in yet: ActivateProvider starts the sign-in")
                                for side, ep in sides))
        return await super().validate(config, ctx)

    # -- activation and sign-in
    async def activate(self, config: ProviderConfig, ctx: DriverContext) -> Activation:
        app = self.app_config(ctx)
        if config.settings.get("access") == APP_ONLY:
            return Activation(report=await self.validate(config, ctx))
        return Activation(authorization=await ctx.run_blocking(self.start, config, app))

    async def complete_authorization(self, config: ProviderConfig, flow: Mapping[str, Any],
                                     response: Mapping[str, str], ctx: DriverContext) -> Authorized:
        app = self.app_config(ctx)
        try:
            done = await ctx.run_blocking(self.finish, config, app, flow, response)
        except requests.RequestException as e:  # the authorization server could not be reached
            raise AuthorizationFailed(f"cannot reach the authorization server ({type(e).__name__})") from None
        return Authorized(done.account, {**done.secrets, AUTHORIZATION_ID: str(uuid.uuid4())})

    async def release(self, provider_id: str) -> None:
        await super().release(provider_id)
        with self._lock:
            self._tokens.pop(provider_id, None)

    # -- the server's OAuth application
    required_config: tuple[str, ...] = ("client_id", "client_secret")

    def app_config(self, ctx: DriverContext) -> Mapping[str, Any]:
        app = ctx.driver_config(self.type)
        missing = [k for k in self.required_config if not app.get(k)]
        if missing:
            raise NotConfigured(
                f"the {self.type} OAuth application is not configured: set {', '.join(missing)} in "
                f"the [{self.type}] section of the drivers configuration (MAILGATE_DRIVERS_CONFIG)")
        return app

    def discovery(self, app: Mapping[str, Any], url: str) -> Mapping[str, Any]:
        """The issuer's OpenID discovery document (endpoints, jwks_uri), read once.
        One without the issuer or an endpoint this needs is a configuration error
        (NotConfigured), not kept: ID tokens could not be checked against it."""
        with self._lock:
            known = self._discovered.get(url)
        if known is None:
            answer = self.session(app).get(url, timeout=10)
            answer.raise_for_status()
            document = answer.json()
            missing = [k for k in DISCOVERY_FIELDS
                       if not (isinstance(document, dict) and isinstance(document.get(k), str) and document[k])]
            if missing:
                raise NotConfigured(f"the discovery document {url} lacks {', '.join(missing)}: check the "
                                    f"authority (or discovery_url) in the [{self.type}] section of the "
                                    f"drivers configuration")
            known = document
            with self._lock:
                self._discovered[url] = known
        return known

    def session(self, app: Mapping[str, Any]) -> requests.Session:
        """HTTP for the authorization server. With `ca_file` it trusts that CA only,
        and ignores the environment (requests would let REQUESTS_CA_BUNDLE win)."""
        ca = str(app.get("ca_file") or "")
        with self._lock:
            s = self._sessions.get(ca)
            if s is None:
                s = requests.Session()
                if ca:
                    s.verify, s.trust_env = ca, False
                self._sessions[ca] = s
            return s


def redirect_uri(app: Mapping[str, Any]) -> str:
    uri = str(app.get("redirect_uri") or "")
    if not uri:
        raise NotConfigured("no redirect_uri configured for the OAuth application, and the "
                            "server's callback listener (MAILGATE_OAUTH_CALLBACK_LISTEN) is off")
    return uri


def words(answer: Mapping[str, Any]) -> str:
    """The provider's own words from an OAuth error answer: `error: error_description`."""
    said = ": ".join(str(answer[k]) for k in ("error", "error_description") if answer.get(k))
    return said or "no reason given"


def failed(what: str, answer: Mapping[str, Any]) -> AuthorizationFailed:
    return AuthorizationFailed(f"{what}: {words(answer)}")


@contextlib.contextmanager
def unreachable(what: str) -> Iterator[None]:
    """Network trouble talking to the authorization server is transient."""
    try:
        yield
    except requests.RequestException as e:
        raise TokenError(f"cannot reach {what} ({type(e).__name__})", refused=False) from None
