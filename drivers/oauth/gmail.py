"""Gmail: Google Workspace and Gmail mailboxes, signed in with google-auth.

Delegated: the authorization-code flow with PKCE, state and nonce (built here:
a URL and one token request), then google-auth's Credentials renew the access
token from the stored refresh token and keep a rotated one. App-only: a service
account with domain-wide delegation acts for the mailbox (`subject`).

Server configuration, section [gmail]: client_id, client_secret, redirect_uri;
optional discovery_url (default Google's), scopes, service_account_file (a JSON
key, for APP_ONLY), ca_file.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlencode

import google.auth.exceptions
import google.auth.transport.requests
import google.oauth2.credentials
import google.oauth2.service_account
import requests

from ..api import Authorization, AuthorizationFailed, Authorized, NotConfigured, ProviderConfig
from ..smtp_imap.presets import GMAIL
from ..transport.errors import TokenError
from .base import OAuthDriver, failed, redirect_uri, unreachable, words
from .idtoken import verify_id_token
from .tokens import Grant

DISCOVERY = "https://accounts.google.com/.well-known/openid-configuration"
SCOPES = ("https://mail.google.com/", "openid", "email")
MAIL_SCOPE = "https://mail.google.com/"
REFRESH_TOKEN = "refresh_token"


class GmailDriver(OAuthDriver):
    type = "gmail"
    display_name = "Gmail (Google Workspace)"
    description = "A Gmail or Google Workspace mailbox, signed in with OAuth2: SMTP and IMAP with XOAUTH2."
    preset = GMAIL
    mail_hosts_default = ("smtp.gmail.com", "imap.gmail.com")
    token_secrets = (REFRESH_TOKEN,)

    def _discovery(self, app: Mapping[str, Any]) -> Mapping[str, Any]:
        return self.discovery(app, str(app.get("discovery_url") or DISCOVERY))

    def start(self, config: ProviderConfig, app: Mapping[str, Any]) -> Authorization:
        meta = self._discovery(app)
        verifier, state, nonce = secrets.token_urlsafe(64), secrets.token_urlsafe(32), secrets.token_urlsafe(16)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        scopes = " ".join(app.get("scopes") or SCOPES)
        query = {"response_type": "code", "client_id": app["client_id"], "redirect_uri": redirect_uri(app),
                 "scope": scopes, "state": state, "nonce": nonce, "login_hint": config.account,
                 "code_challenge": challenge, "code_challenge_method": "S256",
                 # offline + consent: Google sends a refresh token only then
                 "access_type": "offline", "prompt": "consent", "include_granted_scopes": "true"}
        return Authorization(uri=f"{meta['authorization_endpoint']}?{urlencode(query)}", state=state,
                             flow={"code_verifier": verifier, "nonce": nonce, "redirect_uri": redirect_uri(app)})

    def finish(self, config: ProviderConfig, app: Mapping[str, Any], flow: Mapping[str, Any],
               response: Mapping[str, str]) -> Authorized:
        if not response.get("code"):
            raise AuthorizationFailed("the sign-in answer has no code")
        meta, session = self._discovery(app), self.session(app)
        try:
            answer = session.post(meta["token_endpoint"], timeout=30, data={
                "grant_type": "authorization_code", "code": response["code"],
                "redirect_uri": flow["redirect_uri"], "code_verifier": flow["code_verifier"],
                "client_id": app["client_id"], "client_secret": app["client_secret"]})
            result = answer.json()
        except (requests.RequestException, ValueError) as e:
            raise AuthorizationFailed(f"cannot exchange the code at Google ({type(e).__name__})") from None
        if "access_token" not in result:
            raise failed("Google refused the sign-in", result)
        if not result.get("refresh_token"):
            raise AuthorizationFailed("Google sent no refresh token: remove mailgate's access from the "
                                      "Google account's security settings and sign in again")
        claims = verify_id_token(session, meta, result.get("id_token", ""), app["client_id"], flow["nonce"])
        email = claims.get("email")
        if not isinstance(email, str) or not email:
            raise AuthorizationFailed("the ID token names no email address (is the email scope granted?)")
        if claims.get("email_verified") not in (True, "true"):  # missing counts as not verified
            raise AuthorizationFailed(f"Google has not verified the address {email!r}")
        return Authorized(email, {REFRESH_TOKEN: result["refresh_token"]})

    def delegated(self, config: ProviderConfig, app: Mapping[str, Any]) -> Callable[[], Grant]:
        saved = [config.secrets[REFRESH_TOKEN]]
        creds: list[google.oauth2.credentials.Credentials] = []

        def renew() -> Grant:
            if not creds:
                with unreachable("Google's discovery document"):
                    token_uri = self._discovery(app)["token_endpoint"]
                creds.append(google.oauth2.credentials.Credentials(
                    token=None, refresh_token=saved[0], token_uri=token_uri, client_id=app["client_id"],
                    client_secret=app["client_secret"]))
            grant = self._refresh(creds[0], app)
            if creds[0].refresh_token and creds[0].refresh_token != saved[0]:  # rotated
                saved[0] = creds[0].refresh_token
                return Grant(grant.access_token, grant.expires_at, {REFRESH_TOKEN: saved[0]})
            return grant

        return renew

    def app_only(self, config: ProviderConfig, app: Mapping[str, Any]) -> Callable[[], Grant]:
        path = app.get("service_account_file")
        if not path:
            raise NotConfigured("APP_ONLY gmail providers need service_account_file in the [gmail] "
                                "section of the drivers configuration (a key with domain-wide delegation)")
        info = json.loads(Path(path).read_text())
        creds = google.oauth2.service_account.Credentials.from_service_account_info(
            info, scopes=[MAIL_SCOPE], subject=config.account)
        return lambda: self._refresh(creds, app)

    def _refresh(self, creds: Any, app: Mapping[str, Any]) -> Grant:
        try:
            creds.refresh(google.auth.transport.requests.Request(self.session(app)))
        except google.auth.exceptions.RefreshError as e:
            answer = e.args[1] if len(e.args) > 1 and isinstance(e.args[1], dict) else {}
            said = words(answer) if answer else str(e.args[0] if e.args else e)
            raise TokenError(said, refused=not e.retryable) from None
        except google.auth.exceptions.TransportError as e:
            raise TokenError(f"cannot reach Google's token endpoint ({type(e).__name__})", refused=False) from None
        expiry = creds.expiry.replace(tzinfo=dt.timezone.utc) if creds.expiry else None
        expires_at = expiry.timestamp() if expiry else dt.datetime.now(dt.timezone.utc).timestamp() + 3600
        return Grant(creds.token, expires_at)
