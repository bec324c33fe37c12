"""The test OAuth server (mailgate.testing.servers.oauth) end to end with the real
client libraries (MSAL, google-auth) and the real mail servers taking its tokens
(Dovecot's oauth2 passdb by introspection, aiosmtpd's XOAUTH2). No mocks: if these
fail, every Outlook/Gmail provider test built on them is meaningless."""

from __future__ import annotations

import base64
import hashlib
import secrets
import smtplib
import time
from urllib.parse import parse_qsl, urlencode, urlsplit

import google.auth.transport.requests
import jwt
import msal
import pytest
import requests
from google.auth.exceptions import RefreshError, TransportError
from google.oauth2 import id_token, service_account
from google.oauth2.credentials import Credentials
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from mailgate.testing.fixtures import (
    GMAIL_CLIENT_ID, GMAIL_CLIENT_SECRET, OUTLOOK_CLIENT_ID, OUTLOOK_CLIENT_SECRET,
)

USER = "agent@example.test"  # in mail_users
OTHER = "someone-else@example.test"  # signs in, but has no mailbox
OUTLOOK_SCOPES = ["https://outlook.office.com/IMAP.AccessAsUser.All",
                  "https://outlook.office.com/SMTP.Send"]
GMAIL_SCOPE = "openid email https://mail.google.com/"
REDIRECT_URI = "http://127.0.0.1:1/callback"
# MSAL recommends response_mode="form_post" on every auth-code flow; the server
# redirects (query), as a service's callback receives it.
pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended")

REVOKED = ("invalid_grant", "AADSTS50173: The provided grant has expired due to it being revoked")


# -- helpers ---------------------------------------------------------------------------

@pytest.fixture
def http(mail_ca) -> requests.Session:
    """What the providers must use: trusts the test CA only. trust_env=False matters:
    REQUESTS_CA_BUNDLE, when the environment sets it, would otherwise replace ``verify``."""
    session = requests.Session()
    session.verify = str(mail_ca.ca_path)  # the CA, not the server's cert_path
    session.trust_env = False
    yield session
    session.close()


def outlook_app(server, http, cache: msal.SerializableTokenCache | None = None, *,
                authority: str | None = None):
    return msal.ConfidentialClientApplication(
        OUTLOOK_CLIENT_ID, client_credential=OUTLOOK_CLIENT_SECRET,
        authority=authority or server.authority(), instance_discovery=False, http_client=http,
        token_cache=cache)


def outlook_sign_in(server, app, user: str = USER) -> dict:
    flow = app.initiate_auth_code_flow(scopes=OUTLOOK_SCOPES, redirect_uri=REDIRECT_URI,
                                       login_hint=user)
    location = server.sign_in(flow["auth_uri"])
    assert location.startswith(REDIRECT_URI + "?")
    return app.acquire_token_by_auth_code_flow(flow, dict(parse_qsl(urlsplit(location).query)))


def refresh_tokens(cache: msal.SerializableTokenCache) -> list[str]:
    return [rt["secret"] for rt in cache.search(msal.TokenCache.CredentialType.REFRESH_TOKEN)]


def used_refresh_tokens(server) -> list[str]:
    return [params["refresh_token"] for what, params in server.requests if what == "refresh_token"]


def imap_xoauth2(dovecot, user: str, token: str, *, mechanism: str = "XOAUTH2") -> None:
    client = IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=5)
    try:
        if mechanism == "XOAUTH2":
            client.oauth2_login(user, token)
        else:
            client.oauthbearer_login(user, token)
        assert client.select_folder("INBOX")
    finally:
        client.logout()


def smtp_xoauth2(server, ca, user: str, token: str) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=5) as client:
        client.ehlo()
        client.starttls(context=ca.client_context())
        client.ehlo()
        assert "XOAUTH2" in client.esmtp_features["auth"].split()
        code, _ = client.auth("XOAUTH2", lambda challenge=None:
                              f"user={user}\x01auth=Bearer {token}\x01\x01")
        assert code == 235


def refused_everywhere(dovecot, smtp, ca, user: str, token: str) -> None:
    started = time.monotonic()
    with pytest.raises(LoginError, match=r"\[AUTHENTICATIONFAILED\]"):
        imap_xoauth2(dovecot, user, token)
    assert time.monotonic() - started < 1
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        smtp_xoauth2(smtp, ca, user, token)
    assert refused.value.smtp_code == 535


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def gmail_sign_in(server, http, user: str = USER, *, verifier_sent: str | None = None) -> requests.Response:
    """Authorization code with PKCE, exchanged by a plain token POST."""
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(16)
    location = server.sign_in(server.authorize_uri + "?" + urlencode({
        "client_id": GMAIL_CLIENT_ID, "redirect_uri": REDIRECT_URI, "response_type": "code",
        "scope": GMAIL_SCOPE, "state": state, "login_hint": user, "access_type": "offline",
        "code_challenge": challenge, "code_challenge_method": "S256"}))
    answer = dict(parse_qsl(urlsplit(location).query))
    assert answer["state"] == state
    return http.post(server.token_uri, data={
        "grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT_URI,
        "client_id": GMAIL_CLIENT_ID, "client_secret": GMAIL_CLIENT_SECRET,
        "code_verifier": verifier if verifier_sent is None else verifier_sent})


# -- Dovecot and SMTP with oauth2 --------------------------------------------------------

def test_oauth_dovecot_keeps_password_logins(oauth_dovecot, oauth_smtp, mail_users, mail_ca):
    for user, password in mail_users.items():
        client = IMAPClient(oauth_dovecot.host, oauth_dovecot.imap_port, ssl=False, timeout=5)
        assert b"Logged in" in client.login(user, password)
        client.logout()
    with smtplib.SMTP(oauth_smtp.host, oauth_smtp.port, timeout=5) as client:
        client.starttls(context=mail_ca.client_context())
        assert client.login(USER, mail_users[USER])[0] == 235


# -- MSAL (Outlook) ----------------------------------------------------------------------

def test_msal_auth_code_flow_tokens_log_in(clean_oauth, oauth_dovecot, oauth_smtp, http, mail_ca):
    server = clean_oauth
    result = outlook_sign_in(server, outlook_app(server, http))
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer"
    assert result["id_token_claims"]["preferred_username"] == USER
    assert set(OUTLOOK_SCOPES) <= set(result["scope"].split())
    authorize = [params for what, params in server.requests if what == "/authorize"][0]
    assert authorize["code_challenge_method"] == "S256" and authorize["login_hint"] == USER

    # MSAL does not check the ID token; a service verifies it against the JWKS.
    keys = jwt.PyJWKClient(server.jwks_uri, ssl_context=mail_ca.client_context())
    claims = jwt.decode(result["id_token"], keys.get_signing_key_from_jwt(result["id_token"]).key,
                        algorithms=["RS256"], audience=OUTLOOK_CLIENT_ID,
                        issuer=server.issuer("common"))
    assert claims["email"] == USER and claims["tid"] == server.tenant_id

    token = result["access_token"]
    assert len(token) > 1000  # real-size: long AUTH lines are exercised
    imap_xoauth2(oauth_dovecot, USER, token)
    imap_xoauth2(oauth_dovecot, USER.upper(), token)  # logins are case-blind
    imap_xoauth2(oauth_dovecot, USER, token, mechanism="OAUTHBEARER")
    smtp_xoauth2(oauth_smtp, mail_ca, USER, token)
    assert server.token_valid(USER, token)

    refused_everywhere(oauth_dovecot, oauth_smtp, mail_ca, USER, token[:-4] + "xxxx")
    other = outlook_sign_in(server, outlook_app(server, http), OTHER)["access_token"]
    refused_everywhere(oauth_dovecot, oauth_smtp, mail_ca, USER, other)

    server.revoke(USER)
    refused_everywhere(oauth_dovecot, oauth_smtp, mail_ca, USER, token)


def test_msal_denied_and_sign_in_as(clean_oauth, http):
    server = clean_oauth
    server.deny_next = True
    result = outlook_sign_in(server, outlook_app(server, http))
    assert result["error"] == "access_denied"
    server.sign_in_as = OTHER  # whatever login_hint says
    result = outlook_sign_in(server, outlook_app(server, http))
    assert result["id_token_claims"]["preferred_username"] == OTHER


def test_msal_refresh_rotates_and_failures(clean_oauth, oauth_dovecot, http):
    server = clean_oauth
    cache = msal.SerializableTokenCache()
    app = outlook_app(server, http, cache)
    first = outlook_sign_in(server, app)
    (old_rt,) = refresh_tokens(cache)
    (account,) = app.get_accounts(username=USER)

    second = app.acquire_token_silent(OUTLOOK_SCOPES, account, force_refresh=True)
    assert second["access_token"] != first["access_token"]
    (new_rt,) = refresh_tokens(cache)
    assert new_rt != old_rt and used_refresh_tokens(server) == [old_rt]
    assert cache.has_state_changed  # the service must persist the cache now
    imap_xoauth2(oauth_dovecot, USER, second["access_token"])

    # The old refresh token is gone: a second app with a stale copy gets invalid_grant.
    stale = msal.SerializableTokenCache()
    stale.deserialize(cache.serialize().replace(new_rt, old_rt))
    stale_app = outlook_app(server, http, stale)
    error = stale_app.acquire_token_silent_with_error(
        OUTLOOK_SCOPES, stale_app.get_accounts(username=USER)[0], force_refresh=True)
    assert error["error"] == "invalid_grant"

    # Refused refresh (revoked grant). MSAL remembers a 400 for ~60 s per app, so
    # every step below uses a fresh app over the same cache.
    saved = cache.serialize()
    server.refuse_refresh = REVOKED
    error = app.acquire_token_silent_with_error(OUTLOOK_SCOPES, account, force_refresh=True)
    assert error["error"] == "invalid_grant"
    assert error["error_description"].startswith("AADSTS50173")
    assert app.acquire_token_silent(OUTLOOK_SCOPES, account, force_refresh=True) is None
    assert refresh_tokens(cache) == [new_rt]  # MSAL keeps the refused token

    # Network failure: MSAL lets requests' ConnectionError through (no error dict).
    server.refuse_refresh = None
    server.drop_token_requests = 1
    fresh = msal.SerializableTokenCache()
    fresh.deserialize(saved)
    fresh_app = outlook_app(server, http, fresh)
    fresh_account = fresh_app.get_accounts(username=USER)[0]
    with pytest.raises(requests.exceptions.ConnectionError):
        fresh_app.acquire_token_silent_with_error(OUTLOOK_SCOPES, fresh_account, force_refresh=True)
    assert server.drop_token_requests == 0
    third = fresh_app.acquire_token_silent_with_error(OUTLOOK_SCOPES, fresh_account, force_refresh=True)
    assert "access_token" in third, third
    assert used_refresh_tokens(server)[-2:] == [new_rt, new_rt]  # dropped, then served


def test_msal_client_credentials_any_mailbox(clean_oauth, oauth_dovecot, oauth_smtp, http,
                                             mail_ca):
    server = clean_oauth
    app = outlook_app(server, http, authority=server.authority(server.tenant_id))
    result = app.acquire_token_for_client(scopes=["https://outlook.office365.com/.default"])
    assert "access_token" in result, result
    assert "refresh_token" not in result
    token = result["access_token"]
    for mailbox in (USER, "support"):
        imap_xoauth2(oauth_dovecot, mailbox, token)
    smtp_xoauth2(oauth_smtp, mail_ca, USER, token)
    assert [what for what, _ in server.requests if what == "client_credentials"]

    wrong = msal.ConfidentialClientApplication(
        OUTLOOK_CLIENT_ID, client_credential="wrong-secret",
        authority=server.authority(server.tenant_id), instance_discovery=False, http_client=http)
    assert wrong.acquire_token_for_client(
        scopes=["https://outlook.office365.com/.default"])["error"] == "invalid_client"


# -- google-auth (Gmail) -----------------------------------------------------------------

def test_google_code_exchange_refresh_and_failures(clean_oauth, oauth_dovecot, http):
    server = clean_oauth
    response = gmail_sign_in(server, http)
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["scope"] == GMAIL_SCOPE  # echoed exactly (oauthlib insists)
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600

    request = google.auth.transport.requests.Request(http)
    claims = id_token.verify_token(tokens["id_token"], request, audience=GMAIL_CLIENT_ID,
                                   certs_url=server.jwks_uri)
    assert claims["email"] == USER and claims["email_verified"] is True
    assert claims["iss"] == server.issuer()

    # A wrong PKCE verifier is refused (and the code was single use anyway).
    refused = gmail_sign_in(server, http, verifier_sent="not-the-verifier")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"

    old_rt = tokens["refresh_token"]
    creds = Credentials(token=None, refresh_token=old_rt, token_uri=server.token_uri,
                        client_id=GMAIL_CLIENT_ID, client_secret=GMAIL_CLIENT_SECRET)
    creds.refresh(request)
    assert creds.valid and creds.token != tokens["access_token"]
    assert creds.refresh_token != old_rt  # rotated and kept
    assert used_refresh_tokens(server) == [old_rt]
    imap_xoauth2(oauth_dovecot, USER, creds.token)

    stale = Credentials(token=None, refresh_token=old_rt, token_uri=server.token_uri,
                        client_id=GMAIL_CLIENT_ID, client_secret=GMAIL_CLIENT_SECRET)
    with pytest.raises(RefreshError) as error:
        stale.refresh(request)
    assert error.value.args[1]["error"] == "invalid_grant"

    server.refuse_refresh = REVOKED
    with pytest.raises(RefreshError) as error:
        creds.refresh(request)
    assert error.value.args[1] == {"error": REVOKED[0], "error_description": REVOKED[1]}
    assert error.value.retryable is False

    server.refuse_refresh = None
    server.drop_token_requests = 1
    with pytest.raises(TransportError):
        creds.refresh(request)
    creds.refresh(request)  # the failure was transient
    assert creds.valid


def test_google_service_account_delegation(clean_oauth, oauth_dovecot, http):
    server = clean_oauth
    info = server.add_service_account("svc@project.test")
    request = google.auth.transport.requests.Request(http)
    creds = service_account.Credentials.from_service_account_info(
        info, scopes=["https://mail.google.com/"], subject=USER)
    creds.refresh(request)
    assert creds.valid
    (what, params), = [r for r in server.requests if r[0].endswith("jwt-bearer")]
    assert "assertion" in params
    imap_xoauth2(oauth_dovecot, USER, creds.token)
    with pytest.raises(LoginError, match=r"\[AUTHENTICATIONFAILED\]"):
        imap_xoauth2(oauth_dovecot, "support", creds.token)

    # A key the server does not know (same e-mail, another private key).
    forged = dict(info, **{k: v for k, v in server.add_service_account("x@project.test").items()
                           if k in ("private_key", "private_key_id")})
    with pytest.raises(RefreshError) as error:
        service_account.Credentials.from_service_account_info(
            forged, scopes=["https://mail.google.com/"], subject=USER).refresh(request)
    assert error.value.args[1]["error"] == "invalid_grant"


def test_expired_token_refused(clean_oauth, oauth_dovecot, oauth_smtp, http, mail_ca):
    server = clean_oauth
    server.access_token_lifetime = 0
    result = outlook_sign_in(server, outlook_app(server, http))
    assert result["expires_in"] == 0
    assert not server.token_valid(USER, result["access_token"])
    refused_everywhere(oauth_dovecot, oauth_smtp, mail_ca, USER, result["access_token"])
