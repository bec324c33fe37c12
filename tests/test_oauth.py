"""Outlook and Gmail providers end to end: the real MSAL and google-auth code in the
server talks to a local authorization server (mailgate.testing.servers.oauth);
Dovecot and aiosmtpd accept its tokens over SASL XOAUTH2."""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.request
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from mailgate.server.logs import protect
from mailgate.testing.fixtures import GMAIL_CLIENT_ID, OAUTH_CLIENTS, OUTLOOK_CLIENT_ID
from mailgate.testing.conformance import DriverConformance
from mailgate.testing.consumer import Consumer
from mailgate.testing.harness import ServerThread, make_settings
from mailgate.testing.rpc import expect_error
from mailgate.v1 import mail_service_pb2 as mpb, mail_service_pb2_grpc, provider_event_pb2, provider_pb2, validation_pb2
from mailgate.v1.provider_event_pb2 import ProviderEvent as PE
from mailgate.v1 import provider_service_pb2 as pb

USER = "agent@example.test"
TYPES = ("outlook", "gmail")
GREY, GREEN, RED = provider_pb2.Provider.STATE_GREY, provider_pb2.Provider.STATE_GREEN, provider_pb2.Provider.STATE_RED
DELEGATED, APP_ONLY = provider_pb2.OAuthMailboxSettings.ACCESS_DELEGATED, provider_pb2.OAuthMailboxSettings.ACCESS_APP_ONLY
CONSUMERS_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"  # Microsoft's, of every personal account
# Inside the token source's renewal margin (300 s): every use renews, so refreshes are easy to cause.
SHORT_LIVED = 200


class OAuthMailgate:
    """A mailgate whose OAuth applications point at the test authorization server."""

    def __init__(self, tmp_path, database_url, oauth, ca, *, extra_config: str = "", **overrides):
        """`extra_config`: lines added to both drivers' sections."""
        self.oauth, self.ca = oauth, ca
        self.service_account = tmp_path / "service-account.json"
        self.service_account.write_text(json.dumps(oauth.add_service_account("mailgate@project.test")))
        self.config = config = tmp_path / "drivers.toml"
        self.write_config(extra_config)
        self.settings = make_settings(tmp_path, database_url, drivers_config=str(config),
                                      oauth_callback_listen="127.0.0.1:0", **overrides)
        self.server = ServerThread(self.settings).start()
        self.stub = self.server.stub
        self.mail = mail_service_pb2_grpc.MailServiceStub(self.server.channel)

    def write_config(self, extra: str = "") -> None:
        """The drivers configuration (read at start: restart() for a change)."""
        oauth, ca, account = self.oauth, self.ca, self.service_account
        self.config.write_text(f"""
[outlook]
client_id = "{OUTLOOK_CLIENT_ID}"
client_secret = "{OAUTH_CLIENTS[OUTLOOK_CLIENT_ID]}"
authority = "{oauth.authority(oauth.tenant_id)}"
ca_file = "{ca.ca_path}"
mail_hosts = ["127.0.0.1"]
{extra}

[gmail]
client_id = "{GMAIL_CLIENT_ID}"
client_secret = "{OAUTH_CLIENTS[GMAIL_CLIENT_ID]}"
discovery_url = "{oauth.url}/.well-known/openid-configuration"
ca_file = "{ca.ca_path}"
mail_hosts = ["127.0.0.1"]
service_account_file = "{account}"
{extra}
""")

    def restart(self) -> None:
        self.server.stop()
        self.server = ServerThread(self.settings).start()
        self.stub = self.server.stub
        self.mail = mail_service_pb2_grpc.MailServiceStub(self.server.channel)

    def create(self, type_, dovecot, smtp, *, account=USER, access=0, receive=True, name=None):
        settings = provider_pb2.OAuthMailboxSettings(
            access=access, ca_certificates_pem=self.ca.ca_pem,
            smtp=provider_pb2.Endpoint(host=smtp.host, port=smtp.port, security=provider_pb2.SECURITY_STARTTLS),
            imap=provider_pb2.Endpoint(host=dovecot.host, port=dovecot.imaps_port,
                                       security=provider_pb2.SECURITY_TLS))
        return self.stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
            display_name=name or f"{type_} desk", type=type_, account=account, receive_emails=receive,
            campaign="support", **{type_: settings})))

    def start_sign_in(self, name) -> pb.ActivateProviderResponse:
        return self.stub.ActivateProvider(pb.ActivateProviderRequest(name=name))

    def sign_in(self, name) -> pb.CompleteAuthorizationResponse:
        """ActivateProvider, the browser's round trip, CompleteAuthorization."""
        redirect = self.oauth.sign_in(self.start_sign_in(name).authorization.authorization_uri)
        return self.stub.CompleteAuthorization(pb.CompleteAuthorizationRequest(authorization_response=redirect))

    def get(self, name) -> provider_pb2.Provider:
        return self.stub.GetProvider(pb.GetProviderRequest(name=name))

    def send(self, name, subject="Your order") -> mpb.OutboundMessage:
        return self.mail.SendEmail(mpb.SendEmailRequest(provider=name, to=["customer@example.test"],
                                                        subject=subject, text_body="Hello"))

    def wait_sent(self, message, timeout=15) -> mpb.OutboundMessage:
        deadline = time.monotonic() + timeout
        while True:
            m = self.mail.GetOutboundMessage(mpb.GetOutboundMessageRequest(name=message.name))
            if m.state == mpb.OutboundMessage.STATE_SENT or time.monotonic() > deadline:
                return m
            time.sleep(0.1)

    def events(self, name) -> list[provider_event_pb2.ProviderEvent]:
        return list(self.stub.ListProviderEvents(pb.ListProviderEventsRequest(parent=name)).provider_events)

    def stored(self, name):
        """The provider as the store holds it (secrets opened), for what the API never shows."""
        return self.server.call(self.server.app.providers.get(name.removeprefix("providers/")))

    def close(self) -> None:
        self.server.stop()


@pytest.fixture
def mg(tmp_path, mailgate_database_url, clean_oauth, mail_ca, oauth_dovecot):
    oauth_dovecot.clear()  # before any provider watches it: no mail from an earlier test
    server = OAuthMailgate(tmp_path, mailgate_database_url, clean_oauth, mail_ca)
    yield server
    server.close()


def wait_state(mg, name, state, timeout=15) -> provider_pb2.Provider:
    deadline = time.monotonic() + timeout
    while True:
        p = mg.get(name)
        if p.state == state or time.monotonic() > deadline:
            return p
        time.sleep(0.1)


def wait_until(predicate, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def wait_watched(dovecot, timeout=15) -> None:
    """Until the watcher is logged in (its own token renewal done), as Dovecot sees it."""
    deadline = time.monotonic() + timeout
    while dovecot.sessions(USER) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dovecot.sessions(USER) == 1


def refreshes(oauth) -> list[dict]:
    return [params for what, params in oauth.requests if what == "refresh_token"]


# -- signing in ----------------------------------------------------------------------------

@pytest.mark.parametrize("type_", TYPES)
def test_sign_in_stores_grey_then_proves_the_mailbox_and_turns_green(mg, type_, oauth_dovecot, oauth_smtp):
    p = mg.create(type_, oauth_dovecot, oauth_smtp)
    assert p.state == GREY and "ActivateProvider" in p.state_reason

    started = mg.start_sign_in(p.name)
    auth = started.authorization
    query = parse_qs(urlsplit(auth.authorization_uri).query)
    assert query["login_hint"] == [USER] and query["state"] == [auth.state]
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert any("IMAP" in s or "mail.google.com" in s for s in query["scope"][0].split())
    assert started.provider.state == GREY and not started.report.checks
    ttl = auth.expire_time.ToDatetime(timezone.utc) - datetime.now(timezone.utc)
    assert 590 < ttl.total_seconds() <= 600

    redirect = mg.oauth.sign_in(auth.authorization_uri)
    done = mg.stub.CompleteAuthorization(pb.CompleteAuthorizationRequest(authorization_response=redirect))
    assert done.provider.state == GREEN, done.provider.state_reason
    assert done.provider.state_reason == f"signed in as {USER}; mailbox checked"
    passed = {c.id for c in done.report.checks if c.outcome == c.OUTCOME_PASSED}
    assert {"smtp.auth", "imap.auth"} <= passed
    # Tokens are sealed in the store and never part of a response.
    shown = mg.get(p.name).SerializeToString() + done.SerializeToString()
    assert mg.oauth.issued and not any(t.encode() in shown for t in mg.oauth.issued)
    assert mg.stored(p.name).config.secrets


def test_a_pending_sign_in_survives_a_restart(mg, oauth_dovecot, oauth_smtp):
    p = mg.create("outlook", oauth_dovecot, oauth_smtp)
    redirect = mg.oauth.sign_in(mg.start_sign_in(p.name).authorization.authorization_uri)
    mg.restart()
    done = mg.stub.CompleteAuthorization(pb.CompleteAuthorizationRequest(authorization_response=redirect))
    assert done.provider.state == GREEN, done.provider.state_reason


@pytest.mark.parametrize("type_, access", [(t, a) for t in TYPES for a in (DELEGATED, APP_ONLY)])
def test_no_credential_reaches_a_log_handler_even_at_debug_level(mg, type_, access, oauth_dovecot, oauth_smtp,
                                                                caplog):
    """The real libraries at DEBUG (MSAL logs the authorization code and the PKCE
    verifier there): through the server's redacting filter, no token, code, verifier,
    assertion or client secret is written."""
    caplog.set_level(logging.DEBUG)
    protect(caplog.handler)
    mg.oauth.access_token_lifetime = SHORT_LIVED  # renewals too
    p = mg.create(type_, oauth_dovecot, oauth_smtp, access=access)
    done = mg.start_sign_in(p.name).provider if access == APP_ONLY else mg.sign_in(p.name).provider
    assert done.state == GREEN, done.state_reason
    assert mg.wait_sent(mg.send(p.name)).state == mpb.OutboundMessage.STATE_SENT
    secrets = [*mg.oauth.issued, *OAUTH_CLIENTS.values()] + [
        params[k] for _, params in mg.oauth.requests for k in ("code", "code_verifier", "assertion", "state")
        if params.get(k)]
    logged = caplog.text
    assert "access token renewed" in logged  # the log was captured
    assert mg.oauth.issued and not [t for t in secrets if t in logged]
    history = json.dumps([MessageToDict(e) for e in mg.events(p.name)])  # nor in the provider's events
    assert "TYPE_TOKEN_RENEWED" in history and not [t for t in secrets if t in history]


def test_the_cli_prints_the_sign_in_address_and_completes_with_the_redirect(mg, oauth_dovecot, oauth_smtp,
                                                                             capsys, monkeypatch):
    from mailgate.cli import main

    monkeypatch.setenv("MAILGATE_TOKEN", mg.server.token)
    p = mg.create("gmail", oauth_dovecot, oauth_smtp)
    server = ["--server", mg.server.address]
    assert main([*server, "providers", "activate", p.name]) == 0
    printed = capsys.readouterr().out
    [uri] = [line.split(": ", 1)[1] for line in printed.splitlines() if line.startswith("sign in and consent at")]
    assert main([*server, "providers", "authorize", mg.oauth.sign_in(uri)]) == 0
    assert f"GREEN - signed in as {USER}; mailbox checked" in capsys.readouterr().out


def test_the_state_and_code_fields_complete_a_sign_in_too(mg, oauth_dovecot, oauth_smtp):
    p = mg.create("gmail", oauth_dovecot, oauth_smtp)
    redirect = mg.oauth.sign_in(mg.start_sign_in(p.name).authorization.authorization_uri)
    q = {k: v[0] for k, v in parse_qs(urlsplit(redirect).query).items()}
    done = mg.stub.CompleteAuthorization(pb.CompleteAuthorizationRequest(state=q["state"], code=q["code"]))
    assert done.provider.state == GREEN, done.provider.state_reason


@pytest.mark.parametrize("type_", TYPES)
def test_mail_goes_out_and_comes_in_after_sign_in(mg, type_, oauth_dovecot, oauth_smtp):
    p = mg.create(type_, oauth_dovecot, oauth_smtp)
    assert mg.sign_in(p.name).provider.state == GREEN
    sent = mg.wait_sent(mg.send(p.name, subject="Re: your parcel"))
    assert sent.state == mpb.OutboundMessage.STATE_SENT, sent.last_error.message
    [got] = oauth_smtp.wait_for_messages(1)
    assert got.login == USER and b"Subject: Re: your parcel" in got.content

    consumer = Consumer(mg.server, campaign="support")
    try:
        oauth_dovecot.deliver(USER, b"From: customer@example.test\r\nTo: agent@example.test\r\n"
                                    b"Subject: where is it\r\nMessage-ID: <q1@example.test>\r\n\r\nHello\r\n")
        [r] = consumer.take(timeout=10)
        assert r.message.subject == "where is it" and r.message.provider == p.name
        consumer.ack(r)
    finally:
        consumer.close()


def test_signing_in_as_someone_else_turns_red_and_keeps_no_tokens(mg, oauth_dovecot, oauth_smtp):
    p = mg.create("outlook", oauth_dovecot, oauth_smtp)
    mg.oauth.sign_in_as = "Intruder@Example.test"
    done = mg.sign_in(p.name)
    assert done.provider.state == RED
    assert done.provider.state_reason == (f"signed in as Intruder@Example.test, the provider's account is "
                                          f"{USER}: sign in as {USER}")
    assert mg.stored(p.name).config.secrets == {}


def test_the_account_is_compared_without_regard_to_case(mg, oauth_dovecot, oauth_smtp):
    p = mg.create("outlook", oauth_dovecot, oauth_smtp)
    mg.oauth.sign_in_as = USER.upper()
    assert mg.sign_in(p.name).provider.state == GREEN


@pytest.mark.parametrize("type_", TYPES)
def test_a_discovery_document_without_an_issuer_is_a_configuration_error(mg, type_, oauth_dovecot, oauth_smtp):
    mg.oauth.discovery_changes = {"issuer": None}  # ID tokens could not be checked against it
    p = mg.create(type_, oauth_dovecot, oauth_smtp)
    err = expect_error(lambda: mg.start_sign_in(p.name))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION and err.info.reason == "DRIVER_NOT_CONFIGURED"
    assert "lacks issuer" in err.message and f"[{type_}] section" in err.message
    assert not [what for what, _ in mg.oauth.requests if what == "/authorize"]
    assert mg.get(p.name).state == GREY


@pytest.mark.parametrize("claims", [{"email_verified": None}, {"email_verified": False}], ids=["missing", "false"])
def test_gmail_signs_in_only_an_address_google_has_verified(mg, claims, oauth_dovecot, oauth_smtp):
    mg.oauth.id_token_claims = claims
    p = mg.create("gmail", oauth_dovecot, oauth_smtp)
    done = mg.sign_in(p.name)
    assert done.provider.state == RED
    assert done.provider.state_reason == f"sign-in failed: Google has not verified the address {USER!r}"
    assert mg.stored(p.name).config.secrets == {}


def test_the_outlook_account_is_the_upn_the_tenant_assigns_not_a_claim_a_user_can_edit(mg, oauth_dovecot,
                                                                                       oauth_smtp):
    p = mg.create("outlook", oauth_dovecot, oauth_smtp)
    # Someone else, whose preferred_username and email say they are the provider's account
    mg.oauth.sign_in_as = "intruder@example.test"
    mg.oauth.id_token_claims = {"preferred_username": USER, "email": USER}
    done = mg.sign_in(p.name)
    assert done.provider.state == RED
    assert done.provider.state_reason == (f"signed in as intruder@example.test, the provider's account is {USER}: "
                                          f"sign in as {USER}")
    assert mg.stored(p.name).config.secrets == {}
    # The account itself, whatever those claims say
    mg.oauth.sign_in_as = None
    mg.oauth.id_token_claims = {"preferred_username": "Agent (support desk)", "email": "agent@elsewhere.test"}
    done = mg.sign_in(p.name)
    assert done.provider.state == GREEN and done.provider.state_reason == f"signed in as {USER}; mailbox checked"


def test_an_outlook_id_token_without_upn_is_refused_with_what_to_configure(mg, oauth_dovecot, oauth_smtp):
    mg.oauth.id_token_claims = {"upn": None}  # an app registration that does not ask for the optional claim
    p = mg.create("outlook", oauth_dovecot, oauth_smtp)
    done = mg.sign_in(p.name)
    assert done.provider.state == RED
    assert done.provider.state_reason.startswith("sign-in failed: the ID token has no upn claim: add the optional "
                                                 "claim upn to the ID token")
    assert mg.stored(p.name).config.secrets == {}


def test_a_personal_microsoft_account_signs_in_with_the_address_microsoft_verified(mg, oauth_dovecot, oauth_smtp):
    mg.oauth.id_token_claims = {"upn": None, "tid": CONSUMERS_TENANT}  # Outlook.com: no upn
    p = mg.create("outlook", oauth_dovecot, oauth_smtp)
    assert mg.sign_in(p.name).provider.state == GREEN


def test_consent_refused_turns_red_with_the_providers_words(mg, oauth_dovecot, oauth_smtp):
    p = mg.create("gmail", oauth_dovecot, oauth_smtp)
    mg.oauth.deny_next = True
    done = mg.sign_in(p.name)
    assert done.provider.state == RED and done.provider.state_reason.startswith("sign-in refused: access_denied")


def test_a_state_is_single_use_expires_and_must_be_known(mg, oauth_dovecot, oauth_smtp):
    p = mg.create("outlook", oauth_dovecot, oauth_smtp)
    redirect = mg.oauth.sign_in(mg.start_sign_in(p.name).authorization.authorization_uri)
    request = pb.CompleteAuthorizationRequest(authorization_response=redirect)
    assert mg.stub.CompleteAuthorization(request).provider.state == GREEN

    replay = expect_error(lambda: mg.stub.CompleteAuthorization(request))
    assert replay.code == grpc.StatusCode.FAILED_PRECONDITION
    assert replay.info.reason == "AUTHORIZATION_STATE_USED" and "already used" in replay.message

    unknown = expect_error(lambda: mg.stub.CompleteAuthorization(
        pb.CompleteAuthorizationRequest(state="never-issued", code="x")))
    assert unknown.code == grpc.StatusCode.INVALID_ARGUMENT and "unknown authorization state" in unknown.message

    mg.server.app.providers.authorization_ttl = 0.2  # MAILGATE_AUTHORIZATION_TTL
    redirect = mg.oauth.sign_in(mg.start_sign_in(p.name).authorization.authorization_uri)
    time.sleep(0.3)
    expired = expect_error(lambda: mg.stub.CompleteAuthorization(
        pb.CompleteAuthorizationRequest(authorization_response=redirect)))
    assert expired.code == grpc.StatusCode.FAILED_PRECONDITION
    assert expired.info.reason == "AUTHORIZATION_STATE_EXPIRED"
    assert mg.get(p.name).state == GREEN  # the earlier sign-in stands


def test_a_request_without_state_or_code_is_refused_field_by_field(mg):
    missing = expect_error(lambda: mg.stub.CompleteAuthorization(pb.CompleteAuthorizationRequest(code="c")))
    assert missing.code == grpc.StatusCode.INVALID_ARGUMENT and missing.violations == {
        "state": "required: the state parameter of the redirect"}
    no_code = expect_error(lambda: mg.stub.CompleteAuthorization(pb.CompleteAuthorizationRequest(
        authorization_response="http://127.0.0.1/oauth/callback?state=abc")))
    assert no_code.code == grpc.StatusCode.INVALID_ARGUMENT and "code" in no_code.message


def test_the_callback_listener_completes_the_sign_in_and_answers_a_page(mg, oauth_dovecot, oauth_smtp):
    p = mg.create("outlook", oauth_dovecot, oauth_smtp)
    redirect = mg.oauth.sign_in(mg.start_sign_in(p.name).authorization.authorization_uri)
    assert redirect.startswith(f"http://127.0.0.1:{mg.server.app.callback.redirect_uri.split(':')[2]}")
    with urllib.request.urlopen(redirect, timeout=30) as page:
        assert page.status == 200 and b"Signed in" in page.read()
    assert mg.get(p.name).state == GREEN
    with pytest.raises(urllib.error.HTTPError) as again:  # the state is used up
        urllib.request.urlopen(redirect, timeout=30)
    assert again.value.code == 400 and b"already used" in again.value.read()


# -- tokens over time --------------------------------------------------------------------------

@pytest.mark.parametrize("type_", TYPES)
def test_tokens_are_renewed_before_expiry_and_a_rotated_refresh_token_survives_a_restart(
        mg, type_, oauth_dovecot, oauth_smtp):
    mg.oauth.access_token_lifetime = SHORT_LIVED
    p = mg.create(type_, oauth_dovecot, oauth_smtp, receive=False)
    assert mg.sign_in(p.name).provider.state == GREEN
    for subject in ("one", "two"):
        assert mg.wait_sent(mg.send(p.name, subject)).state == mpb.OutboundMessage.STATE_SENT
    used = [r["refresh_token"] for r in refreshes(mg.oauth)]
    assert len(used) >= 2 and len(set(used)) == len(used)  # each renewal used the newest refresh token

    mg.restart()  # the server refuses every refresh token but the newest: it must have been stored
    sent = mg.wait_sent(mg.send(p.name, "after the restart"))
    assert sent.state == mpb.OutboundMessage.STATE_SENT, sent.last_error.message
    assert mg.get(p.name).state == GREEN


def test_a_network_failure_while_renewing_is_retried_and_the_provider_stays_green(mg, oauth_dovecot, oauth_smtp):
    mg.oauth.access_token_lifetime = SHORT_LIVED
    p = mg.create("outlook", oauth_dovecot, oauth_smtp, receive=False)
    assert mg.sign_in(p.name).provider.state == GREEN
    before = len(refreshes(mg.oauth))
    mg.oauth.drop_token_requests = 1
    sent = mg.wait_sent(mg.send(p.name))
    assert sent.state == mpb.OutboundMessage.STATE_SENT, sent.last_error.message
    assert len(refreshes(mg.oauth)) - before == 2  # the dropped one, then the one that worked
    assert mg.get(p.name).state == GREEN


@pytest.mark.parametrize("type_", TYPES)
def test_a_refused_renewal_turns_red_keeps_the_mail_and_signing_in_again_restores_it(
        mg, type_, oauth_dovecot, oauth_smtp):
    mg.oauth.access_token_lifetime = SHORT_LIVED
    p = mg.create(type_, oauth_dovecot, oauth_smtp)
    assert mg.sign_in(p.name).provider.state == GREEN
    wait_watched(oauth_dovecot)  # the send below, not the watcher's first login, meets the refusal
    mg.oauth.refuse_refresh = ("invalid_grant", "AADSTS50173: the grant was revoked")
    waiting = mg.send(p.name, "waits for the sign-in")
    red = wait_state(mg, p.name, RED)
    assert red.state_reason == "re-authorization required: invalid_grant: AADSTS50173: the grant was revoked"
    assert red.state_cause == provider_pb2.Provider.STATE_CAUSE_AUTHORIZATION_LOST
    assert wait_until(lambda: oauth_dovecot.sessions(USER) == 0)  # nothing left to log in with
    oauth_dovecot.deliver(USER, b"Subject: sent while signed out\r\nMessage-ID: <so@example.test>\r\n\r\nHi\r\n")
    time.sleep(0.5)
    m = mg.mail.GetOutboundMessage(mpb.GetOutboundMessageRequest(name=waiting.name))
    assert m.state in (mpb.OutboundMessage.STATE_QUEUED, mpb.OutboundMessage.STATE_RETRYING)

    # The history: signed in, renewed, refused (in the provider's own words), RED.
    found = mg.events(p.name)
    kinds = [PE.Type.Name(e.type) for e in found]
    assert kinds[:2] == ["TYPE_STATE_CHANGED", "TYPE_TOKEN_RENEWAL_FAILED"], kinds
    assert found[0].state_cause == provider_pb2.Provider.STATE_CAUSE_AUTHORIZATION_LOST
    refused = found[1]
    assert refused.error_code == validation_pb2.Check.ERROR_CODE_AUTHORIZATION_REQUIRED
    assert refused.reason == ("renewing the access token was refused: "
                              "invalid_grant: AADSTS50173: the grant was revoked")
    assert {"TYPE_TOKEN_RENEWED", "TYPE_AUTHORIZATION_COMPLETED", "TYPE_AUTHORIZATION_STARTED"} <= set(kinds[2:])
    assert kinds[-1] == "TYPE_STATE_CHANGED" and found[-1].state == GREY  # created, waiting for the sign-in

    mg.oauth.refuse_refresh = None
    assert mg.sign_in(p.name).provider.state == GREEN
    assert mg.wait_sent(waiting).state == mpb.OutboundMessage.STATE_SENT
    consumer = Consumer(mg.server, campaign="support")
    try:
        [r] = consumer.take(timeout=10)
        assert r.message.subject == "sent while signed out"
    finally:
        consumer.close()


def test_changing_the_account_drops_the_tokens_and_returns_to_grey(mg, oauth_dovecot, oauth_smtp):
    p = mg.create("gmail", oauth_dovecot, oauth_smtp)
    assert mg.sign_in(p.name).provider.state == GREEN
    changed = mg.stub.UpdateProvider(pb.UpdateProviderRequest(
        provider=provider_pb2.Provider(name=p.name, account="support@example.test"),
        update_mask={"paths": ["account"]}))
    assert changed.state == GREY
    assert changed.state_reason == "account changed to support@example.test: sign in again (ActivateProvider)"
    assert changed.state_cause == provider_pb2.Provider.STATE_CAUSE_AUTHORIZATION_PENDING
    assert mg.stored(p.name).config.secrets == {}
    assert wait_until(lambda: oauth_dovecot.sessions(USER) == 0)  # the old account's session ended


@pytest.mark.parametrize("type_", TYPES)
def test_tokens_go_only_to_the_services_own_mail_servers_and_those_configured(mg, type_, oauth_dovecot,
                                                                               oauth_smtp):
    p = mg.create(type_, oauth_dovecot, oauth_smtp)  # 127.0.0.1 is in the test configuration's mail_hosts
    elsewhere = provider_pb2.Endpoint(host="localhost", port=oauth_smtp.port, security=provider_pb2.SECURITY_STARTTLS)
    for validate_only in (True, False):
        err = expect_error(lambda: mg.stub.UpdateProvider(pb.UpdateProviderRequest(
            provider=provider_pb2.Provider(name=p.name, **{type_: provider_pb2.OAuthMailboxSettings(smtp=elsewhere)}),
            update_mask={"paths": [f"{type_}.smtp"]}, validate_only=validate_only)))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "'localhost' is not one of the mail servers" in err.violations[f"provider.{type_}.smtp.host"]
    assert getattr(mg.get(p.name), type_).smtp.host == "127.0.0.1"
    candidate = provider_pb2.Provider(display_name="Elsewhere", type=type_, account=USER, **{
        type_: provider_pb2.OAuthMailboxSettings(imap=provider_pb2.Endpoint(host="imap.example.test"))})
    err = expect_error(lambda: mg.stub.ValidateProvider(pb.ValidateProviderRequest(provider=candidate)))
    assert set(err.violations) == {f"provider.{type_}.imap.host"}  # the preset's SMTP host is the service's own


# -- app-only access -----------------------------------------------------------------------

@pytest.mark.parametrize("type_", TYPES)
def test_app_only_access_needs_no_sign_in(mg, type_, oauth_dovecot, oauth_smtp):
    p = mg.create(type_, oauth_dovecot, oauth_smtp, access=provider_pb2.OAuthMailboxSettings.ACCESS_APP_ONLY)
    assert p.state == GREY
    activated = mg.start_sign_in(p.name)
    assert not activated.HasField("authorization")
    assert activated.provider.state == GREEN, activated.provider.state_reason
    assert {"smtp.auth", "imap.auth"} <= {c.id for c in activated.report.checks if c.outcome == c.OUTCOME_PASSED}
    assert mg.wait_sent(mg.send(p.name)).state == mpb.OutboundMessage.STATE_SENT
    grants = {what for what, _ in mg.oauth.requests}
    assert grants & {"client_credentials", "urn:ietf:params:oauth:grant-type:jwt-bearer"}
    assert mg.stored(p.name).config.secrets == {}  # nothing per provider to keep


@pytest.mark.parametrize("type_", TYPES)
def test_app_only_access_acts_only_for_the_accounts_the_configuration_allows(
        tmp_path, mailgate_database_url, clean_oauth, mail_ca, oauth_dovecot, oauth_smtp, type_):
    oauth_dovecot.clear()
    mg = OAuthMailgate(tmp_path, mailgate_database_url, clean_oauth, mail_ca,
                       extra_config='allowed_accounts = ["*@example.test", "desk@Other.test"]')
    try:
        allowed = mg.create(type_, oauth_dovecot, oauth_smtp, access=APP_ONLY)  # a mailbox of an allowed domain
        assert mg.start_sign_in(allowed.name).provider.state == GREEN
        mg.create(type_, oauth_dovecot, oauth_smtp, account="DESK@other.test", access=APP_ONLY, name="Desk")
        err = expect_error(lambda: mg.create(type_, oauth_dovecot, oauth_smtp, account="ceo@other.test",
                                             access=APP_ONLY, name="CEO"))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT and set(err.violations) == {"provider.account"}
        assert err.violations["provider.account"] == (
            "app-only access acts only for the accounts this server allows: *@example.test, desk@Other.test "
            f"(allowed_accounts in the [{type_}] section of the drivers configuration)")
        # Delegated access is not limited: whoever signs in opens only their own mailboxes.
        delegated = mg.create(type_, oauth_dovecot, oauth_smtp, account="ceo@other.test", name="CEO")
        err = expect_error(lambda: mg.stub.UpdateProvider(pb.UpdateProviderRequest(
            provider=provider_pb2.Provider(name=delegated.name, **{type_: provider_pb2.OAuthMailboxSettings(
                access=APP_ONLY)}), update_mask={"paths": [f"{type_}.access"]})))
        assert set(err.violations) == {"provider.account"}

        # A provider stored before the configuration narrowed gets no token any more.
        mg.write_config('allowed_accounts = ["desk@other.test"]')
        mg.restart()
        red = mg.start_sign_in(allowed.name).provider
        assert red.state == RED and "acts only for the accounts this server allows: desk@other.test" in red.state_reason

        mg.write_config('allowed_accounts = ["sales*@example.test"]')
        mg.restart()
        err = expect_error(lambda: mg.create(type_, oauth_dovecot, oauth_smtp, access=APP_ONLY, name="Sales"))
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION and err.info.reason == "DRIVER_NOT_CONFIGURED"
        assert "'sales*@example.test' is neither an address nor *@domain" in err.message
    finally:
        mg.close()


# -- the driver contract -------------------------------------------------------------------

def oauth_settings(dovecot, smtp, ca, **fields) -> provider_pb2.OAuthMailboxSettings:
    return provider_pb2.OAuthMailboxSettings(
        ca_certificates_pem=ca.ca_pem,
        smtp=provider_pb2.Endpoint(host=smtp.host, port=smtp.port, security=provider_pb2.SECURITY_STARTTLS),
        imap=provider_pb2.Endpoint(host=dovecot.host, port=dovecot.imaps_port, security=provider_pb2.SECURITY_TLS),
        **fields)


class TestOutlookConformance(DriverConformance):
    driver_type = "outlook"

    @pytest.fixture
    def valid_provider(self, oauth_dovecot, oauth_smtp, mail_ca):
        return provider_pb2.Provider(display_name="Outlook desk", type=self.driver_type, account=USER,
                                     receive_emails=True, campaign="support",
                                     **{self.driver_type: oauth_settings(oauth_dovecot, oauth_smtp, mail_ca)})

    # Receiving needs a sign-in: a server with the OAuth applications configured.
    @pytest.fixture
    def mailgate_server(self, mg):
        return mg.server

    @pytest.fixture
    def activate_provider(self, mg):
        return lambda server, name: mg.sign_in(name)

    @pytest.fixture
    def receiving_provider(self, valid_provider):
        return valid_provider

    @pytest.fixture
    def deliver_mail(self, oauth_dovecot):
        return lambda raw: oauth_dovecot.deliver(USER, raw)


class TestGmailConformance(TestOutlookConformance):
    driver_type = "gmail"


def test_checking_a_provider_nobody_signed_in_to_yet_skips_the_logins(mailgate_server):
    resp = mailgate_server.stub.ValidateProvider(pb.ValidateProviderRequest(provider=provider_pb2.Provider(
        display_name="Not yet", type="outlook", account=USER, receive_emails=True)))
    assert [(c.id, c.outcome) for c in resp.report.checks] == [
        ("smtp.auth", resp.report.checks[0].OUTCOME_SKIPPED), ("imap.auth", resp.report.checks[0].OUTCOME_SKIPPED)]
    assert all("not signed in yet" in c.server_message for c in resp.report.checks)


# -- configuration -------------------------------------------------------------------------

def test_an_unconfigured_oauth_application_is_a_failed_precondition_that_names_the_setting(
        mailgate_server, oauth_dovecot, oauth_smtp, mail_ca):
    p = mailgate_server.stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
        display_name="No app", type="outlook", account=USER)))
    err = expect_error(lambda: mailgate_server.stub.ActivateProvider(pb.ActivateProviderRequest(name=p.name)))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION and err.info.reason == "DRIVER_NOT_CONFIGURED"
    assert "client_id, client_secret" in err.message and "MAILGATE_DRIVERS_CONFIG" in err.message


@pytest.mark.parametrize("content, says", [
    ("[outlook\nclient_id = 1", "is not valid TOML"),
    ('client_id = "x"', "expected one [section] per driver type, found plain keys client_id"),
])
def test_a_broken_drivers_configuration_stops_the_server_at_start_with_its_reason(
        tmp_path, monkeypatch, capsys, content, says):
    from mailgate.cli import main

    config = tmp_path / "drivers.toml"
    config.write_text(content)
    root = logging.getLogger()  # `serve` sets up logging for the process: undone after the test
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAILGATE_DRIVERS_CONFIG", str(config))
    assert main(["serve", "--listen", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mailgate serve: MAILGATE_DRIVERS_CONFIG: ") and says in err
    assert not (tmp_path / "mailgate.db").exists()  # refused before anything was created


def test_an_unreachable_token_endpoint_while_watching_is_retried_without_turning_red(
        mg, oauth_dovecot, oauth_smtp):
    mg.oauth.access_token_lifetime = SHORT_LIVED  # every login renews the token
    p = mg.create("outlook", oauth_dovecot, oauth_smtp)
    green = mg.sign_in(p.name).provider
    assert green.state == GREEN
    consumer = Consumer(mg.server, campaign="support")
    try:
        oauth_dovecot.deliver(USER, b"Subject: before\r\nMessage-ID: <b@example.test>\r\n\r\nHi\r\n")
        assert [r.message.subject for r in consumer.take(timeout=10)] == ["before"]
        before = len(refreshes(mg.oauth))
        mg.oauth.drop_token_requests = 4  # more than one login's attempts
        oauth_dovecot.kick(USER)  # the watcher logs in again, and needs a token for it
        deadline = time.monotonic() + 15
        while len(refreshes(mg.oauth)) - before < 5 and time.monotonic() < deadline:
            time.sleep(0.1)  # four dropped, then one that worked
        assert len(refreshes(mg.oauth)) - before >= 5
        oauth_dovecot.deliver(USER, b"Subject: after\r\nMessage-ID: <a@example.test>\r\n\r\nHi\r\n")
        assert [r.message.subject for r in consumer.take(timeout=15)] == ["after"]
    finally:
        consumer.close()
    now = mg.get(p.name)
    assert now.state == GREEN and now.state_time == green.state_time  # it never left GREEN


def test_the_callback_listener_listens_on_ipv6_loopback_and_answers_only_its_path():
    from mailgate.server.providers.callback import CallbackListener

    listener = CallbackListener("[::1]:0")
    listener.start(providers=None, loop=None)  # no sign-in reaches it here
    try:
        assert listener.redirect_uri.startswith("http://[::1]:") and listener.redirect_uri.endswith("/oauth/callback")
        with pytest.raises(urllib.error.HTTPError) as other:
            urllib.request.urlopen(listener.redirect_uri.replace("/oauth/callback", "/admin"), timeout=5)
        assert other.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as no_state:
            urllib.request.urlopen(listener.redirect_uri + "?code=abc", timeout=5)
        assert no_state.value.code == 400 and b"no state parameter" in no_state.value.read()
    finally:
        listener.close()


def _closed_by_the_server(sock: socket.socket) -> bool:
    """Waits (up to the socket's generous timeout) for the server to end the connection."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_the_callback_listener_drops_a_connection_that_sends_nothing_or_dribbles():
    from mailgate.server.providers.callback import CallbackListener

    listener = CallbackListener("127.0.0.1:0", read_timeout=0.5)
    listener.start(providers=None, loop=None)
    address = urlsplit(listener.redirect_uri)
    stop = threading.Event()
    silent = socket.create_connection((address.hostname, address.port), timeout=30)
    dribbler = socket.create_connection((address.hostname, address.port), timeout=30)

    def dribble() -> None:  # a byte every 50 ms: each read is quick, the request never ends
        for byte in b"GET /oauth/callback?state=x HTTP/1.1\r\nHost: x\r\n" * 100:
            try:
                if stop.wait(0.05) or not dribbler.send(bytes([byte])):
                    return
            except OSError:
                return

    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    try:
        assert _closed_by_the_server(silent)
        assert _closed_by_the_server(dribbler)
    finally:
        stop.set()
        thread.join(5)
        silent.close()
        dribbler.close()
        listener.close()


def test_the_callback_listener_serves_a_bounded_number_of_connections_dropping_the_oldest_idle_one():
    from mailgate.server.providers.callback import CallbackListener

    listener = CallbackListener("127.0.0.1:0", read_timeout=60, max_connections=4)
    listener.start(providers=None, loop=None)
    address = urlsplit(listener.redirect_uri)
    sockets = [socket.create_connection((address.hostname, address.port), timeout=30) for _ in range(10)]
    try:
        assert all(_closed_by_the_server(s) for s in sockets[:6])  # dropped to make room, oldest first
        for s in sockets[6:]:  # the four newest are still waiting for their request
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
    finally:
        for s in sockets:
            s.close()
        listener.close()


def test_idle_connections_to_the_callback_listener_do_not_keep_a_real_redirect_out(mg, oauth_dovecot, oauth_smtp):
    p = mg.create("outlook", oauth_dovecot, oauth_smtp)
    redirect = mg.oauth.sign_in(mg.start_sign_in(p.name).authorization.authorization_uri)
    address = urlsplit(redirect)
    idle = [socket.create_connection((address.hostname, address.port), timeout=30) for _ in range(100)]
    try:
        with urllib.request.urlopen(redirect, timeout=30) as page:
            assert page.status == 200 and b"Signed in" in page.read()
    finally:
        for s in idle:
            s.close()
    assert mg.get(p.name).state == GREEN
