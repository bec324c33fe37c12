"""Outlook: Microsoft 365 and Outlook.com mailboxes, signed in with MSAL.

Delegated: MSAL's authorization-code flow (PKCE, state, nonce, login hint); the
serialized MSAL token cache is the provider's secret, renewed with
acquire_token_silent and stored again whenever MSAL changed it (a rotated
refresh token). App-only: client credentials for the tenant (shared mailboxes).

Server configuration, section [outlook]: client_id, client_secret, redirect_uri;
optional authority (default https://login.microsoftonline.com/common; a tenant
or a national cloud), scopes, app_scopes, ca_file.
"""
from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Mapping

import msal

from ..api import Authorization, AuthorizationFailed, Authorized, ProviderConfig
from ..smtp_imap.presets import OUTLOOK
from ..transport.errors import TokenError
from .base import OAuthDriver, failed, redirect_uri, unreachable, words
from .idtoken import verify_id_token
from .tokens import Grant

# MSAL recommends form_post on every flow; redirects come here as a query (an admin UI
# passes the URL on; the callback listener takes GET).
warnings.filterwarnings("ignore", message="response_mode='form_post'", category=UserWarning)

AUTHORITY = "https://login.microsoftonline.com/common"
# MSAL adds openid, profile and offline_access itself (and refuses them here).
SCOPES = ("https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office.com/SMTP.Send")
APP_SCOPES = ("https://outlook.office365.com/.default",)
# The tenant of every personal Microsoft account (Outlook.com, Hotmail)
CONSUMERS_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
CACHE = "msal_token_cache"
# Answers that only a new sign-in (or the tenant administrator) can mend.
REFUSALS = {"invalid_grant", "interaction_required", "invalid_client", "unauthorized_client",
            "consent_required", "login_required"}


class OutlookDriver(OAuthDriver):
    type = "outlook"
    display_name = "Outlook (Microsoft 365)"
    description = ("A Microsoft 365 or Outlook.com mailbox, signed in with OAuth2 (MSAL): SMTP and "
                   "IMAP with XOAUTH2.")
    preset = OUTLOOK
    mail_hosts_default = ("smtp-mail.outlook.com", "smtp.office365.com", "outlook.office365.com")
    token_secrets = (CACHE,)

    def _app(self, app: Mapping[str, Any], cache: msal.TokenCache | None = None
             ) -> msal.ConfidentialClientApplication:
        # instance_discovery=False: the authority's own discovery document is used,
        # without asking Microsoft's global endpoint about it (national clouds, tests).
        return msal.ConfidentialClientApplication(
            app["client_id"], client_credential=app["client_secret"],
            authority=app.get("authority") or AUTHORITY, instance_discovery=False,
            token_cache=cache, http_client=self.session(app))

    def _discovery(self, app: Mapping[str, Any]) -> Mapping[str, Any]:
        return self.discovery(app, (app.get("authority") or AUTHORITY).rstrip("/")
                              + "/v2.0/.well-known/openid-configuration")

    def start(self, config: ProviderConfig, app: Mapping[str, Any]) -> Authorization:
        self._discovery(app)  # a document that cannot vouch for ID tokens stops the sign-in here
        flow = self._app(app).initiate_auth_code_flow(
            list(app.get("scopes") or SCOPES), redirect_uri=redirect_uri(app), login_hint=config.account,
            prompt="select_account")
        return Authorization(uri=flow["auth_uri"], state=flow["state"], flow=flow)

    def finish(self, config: ProviderConfig, app: Mapping[str, Any], flow: Mapping[str, Any],
               response: Mapping[str, str]) -> Authorized:
        cache = msal.SerializableTokenCache()
        client = self._app(app, cache)
        try:
            result = client.acquire_token_by_auth_code_flow(dict(flow), dict(response))
        except ValueError as e:  # MSAL's own checks: state mismatch, missing code
            raise AuthorizationFailed(f"the sign-in answer was refused: {e}") from None
        if "access_token" not in result:
            raise failed("Microsoft refused the sign-in", result)
        # MSAL checked the nonce (it sends a digest of flow["nonce"]); the rest is checked here.
        meta = self._discovery(app)
        claims = verify_id_token(self.session(app), meta, result.get("id_token", ""), app["client_id"])
        return Authorized(signed_in_account(claims), {CACHE: cache.serialize()})

    def delegated(self, config: ProviderConfig, app: Mapping[str, Any]) -> Callable[[], Grant]:
        cache = msal.SerializableTokenCache()
        cache.deserialize(config.secrets[CACHE])
        scopes = list(app.get("scopes") or SCOPES)
        clients: list[msal.ConfidentialClientApplication] = []

        def renew() -> Grant:
            with unreachable("the Microsoft authority"):
                if not clients:  # built once: it reads the authority's discovery document
                    clients.append(self._app(app, cache))
                client = clients[0]
                accounts = client.get_accounts()
                if not accounts:
                    raise TokenError("no account in the stored tokens: sign in again", refused=True)
                result = client.acquire_token_silent_with_error(scopes, accounts[0], force_refresh=True)
            if not result:
                raise TokenError("no refresh token stored: sign in again", refused=True)
            grant = _grant(result)
            if cache.has_state_changed:  # a new refresh token, most of the time
                cache.has_state_changed = False
                return Grant(grant.access_token, grant.expires_at, {CACHE: cache.serialize()})
            return grant

        return renew

    def app_only(self, config: ProviderConfig, app: Mapping[str, Any]) -> Callable[[], Grant]:
        scopes = list(app.get("app_scopes") or APP_SCOPES)

        def renew() -> Grant:
            with unreachable("the Microsoft authority"):  # a fresh cache: MSAL would answer from it
                return _grant(self._app(app, msal.TokenCache()).acquire_token_for_client(scopes))

        return renew


def signed_in_account(claims: Mapping[str, Any]) -> str:
    """Who signed in, from a claim the tenant controls. A work or school account:
    `upn`, the user principal name the tenant's administrators assign, always in one
    of the tenant's verified domains; the user cannot change it (an optional claim of
    v2.0 ID tokens: the app registration asks for it, docs/providers.md).
    `preferred_username` and `email` are not used: Microsoft documents both as
    mutable and not for authorization, and another tenant can set them to any
    address. A personal Microsoft account has no upn; its tenant is Microsoft's
    own, which verifies the address the account signs in with (preferred_username)."""
    if claims.get("tid") == CONSUMERS_TENANT:
        account = claims.get("preferred_username")
    else:
        account = claims.get("upn")
        if not account:
            raise AuthorizationFailed(
                "the ID token has no upn claim: add the optional claim upn to the ID token in the "
                "application's registration (Token configuration); preferred_username and email are "
                "not trusted for the account")
    if not isinstance(account, str) or not account:
        raise AuthorizationFailed("the ID token names no account")
    return account


def _grant(result: Mapping[str, Any]) -> Grant:
    if "access_token" in result:
        return Grant(result["access_token"], time.time() + float(result.get("expires_in") or 3600))
    raise TokenError(words(result), refused=result.get("error") in REFUSALS)
