"""What reaches a log: credentials are redacted by their shape (never by matching
the values the process has seen)."""
from __future__ import annotations

import base64
import json
import logging
import tracemalloc
from urllib.parse import quote, urlencode

import pytest
from google.protobuf import struct_pb2

import mailgate_echo_driver
from mailgate.server import logs
from mailgate.server.logs import REDACTED, RedactingFilter, protect
from mailgate.v1 import provider_pb2, provider_service_pb2 as pb

from support import USER


@pytest.fixture
def mailgate_plugins():
    return [mailgate_echo_driver]


def _echo(key: str, name: str = "Vault") -> provider_pb2.Provider:
    s = struct_pb2.Struct()
    s.update({"greeting": "hi", "api_key": key})
    return provider_pb2.Provider(display_name=name, type="echo", account="v@example.test", plugin_settings=s)


def _filtered(message: str) -> str:
    record = logging.LogRecord("some.library", logging.DEBUG, __file__, 1, "%s", (message,), None)
    RedactingFilter().filter(record)
    return record.getMessage()


# -- the filter keeps nothing and mangles nothing ------------------------------------------

def test_a_huge_refused_secret_leaves_nothing_behind_in_the_log_filter(mailgate_server, caplog):
    """A 10 MB key, refused by the check, then ordinary logging: nothing the filter
    allocated is still held (a filter that remembered secrets would hold the key, or
    a pattern built from it, and rebuild it for every new one)."""
    caplog.set_level(logging.INFO)
    protect(caplog.handler)
    tracemalloc.start(10)
    try:
        huge = "k" * (10 << 20)
        report = mailgate_server.stub.ValidateProvider(pb.ValidateProviderRequest(provider=_echo(huge)))
        assert report.report.checks and not any(c.outcome == c.OUTCOME_PASSED for c in report.report.checks)
        del huge, report
        for n in range(3):
            logging.getLogger("mailgate.test").info("an ordinary line %d, through the filter", n)
        held = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, logs.__file__, all_frames=True)]).statistics("filename")
    finally:
        tracemalloc.stop()
    assert "an ordinary line 2, through the filter" in caplog.text
    assert sum(s.size for s in held) < 1 << 20


def test_a_secret_that_is_a_common_word_leaves_that_word_in_other_log_lines(mailgate_server, caplog,
                                                                           monkeypatch):
    monkeypatch.setattr(mailgate_echo_driver, "ACCEPTED_KEY", "provider")
    caplog.set_level(logging.INFO)
    protect(caplog.handler)
    created = mailgate_server.stub.CreateProvider(pb.CreateProviderRequest(provider=_echo("provider")))
    pid = created.name.removeprefix("providers/")
    assert created.state == provider_pb2.Provider.STATE_GREEN
    assert f"created provider {pid} 'Vault' (echo)" in caplog.text
    logging.getLogger("mailgate.test").info("provider %s is unrelated to the key", pid)
    assert f"provider {pid} is unrelated to the key" in caplog.text


SECRET = "Zq3-y9TfW2_uE8pLk0RxV4mNbC7dHs1aQ6jG5oIeYw"
PASSWORD_OF_A_USER = "Tr0ub4dor&3:x"
MGT = "mgt_0123456789abcdef0123456789abcdef_" + SECRET
JWT = ("eyJhbGciOiJSUzI1NiIsImtpZCI6ImFiYyJ9."
       "eyJpc3MiOiJodHRwczovL2xvZ2luLmV4YW1wbGUiLCJzdWIiOiIxMjMifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


PLAIN = _b64(f"\0{USER}\0{PASSWORD_OF_A_USER}")
XOAUTH2 = _b64(f"user={USER}\x01auth=Bearer {SECRET}\x01\x01")
BASIC = _b64(f"app:{SECRET}")


# (kind, the secret, where it appears): every shape a library or a trace writes it in
KINDS = [
    ("password", PASSWORD_OF_A_USER, [
        urlencode({"username": USER, "password": PASSWORD_OF_A_USER}),
        json.dumps({"username": USER, "password": PASSWORD_OF_A_USER}),
        repr({"username": USER, "password": PASSWORD_OF_A_USER}),
        f"> b'ABCD1 LOGIN {USER} \"{PASSWORD_OF_A_USER}\"'",
        f"> b'PASS {PASSWORD_OF_A_USER}'",
        f"send: 'AUTH PLAIN {PLAIN}\\r\\n'",
        f"postgresql+psycopg://mailgate:{quote(PASSWORD_OF_A_USER, safe='')}@db.example.test:5432/mailgate",
    ]),
    ("access token", SECRET, [
        f"access_token={SECRET}&token_type=Bearer",
        json.dumps({"token_type": "Bearer", "access_token": SECRET, "expires_in": 3599}),
        f"headers={{'Authorization': 'Bearer {SECRET}', 'Accept': '*/*'}}",
        f"user={USER}\x01auth=Bearer {SECRET}\x01\x01",
        f"> b'WXYZ2 AUTHENTICATE XOAUTH2 {XOAUTH2}'",
        f"ya29.{SECRET}",
    ]),
    ("refresh token", SECRET, [
        urlencode({"grant_type": "refresh_token", "refresh_token": SECRET, "client_id": "app"}),
        json.dumps({"refresh_token": SECRET, "scope": "openid"}),
        json.dumps({"RefreshToken": {"k": {"credential_type": "RefreshToken", "secret": SECRET}}}),
        json.dumps(json.dumps({"secret": SECRET})),  # a serialized token cache inside JSON
        f"1//{SECRET}",
    ]),
    ("authorization code", SECRET, [
        f"GET /oauth/callback?state=s1&code={SECRET}&session_state=x HTTP/1.1",
        urlencode({"grant_type": "authorization_code", "code": SECRET, "redirect_uri": "http://x/cb"}),
        json.dumps({"data": {"client_id": "app", "code": SECRET}}, indent=4),
    ]),
    ("PKCE verifier", SECRET, [
        urlencode({"code": "c" * 30, "code_verifier": SECRET}),
        json.dumps({"code_verifier": SECRET, "redirect_uri": "http://x/cb"}, indent=4),
    ]),
    ("client secret", SECRET, [
        urlencode({"client_id": "app", "client_secret": SECRET}),
        json.dumps({"client_id": "app", "client_secret": SECRET}),
        f"Authorization: Basic {BASIC}",
    ]),
    ("API token", MGT, [
        f"metadata=(('authorization', 'Bearer {MGT}'),)",
        f"the token {MGT} was pasted into a ticket",
    ]),
    ("ID token", JWT, [
        json.dumps({"id_token": JWT}),
        f"token {JWT} refused",
    ]),
]


@pytest.mark.parametrize("secret, line", [
    pytest.param(secret, line, id=f"{kind}-{i}") for kind, secret, lines in KINDS for i, line in enumerate(lines)])
def test_each_kind_of_secret_is_redacted_wherever_it_appears_in_a_line(secret, line):
    forms = {secret, quote(secret, safe=""), json.dumps(secret)[1:-1]} | {b for b in (PLAIN, XOAUTH2, BASIC) if b in line}
    assert any(f in line for f in forms)
    out = _filtered(f"before {line} after")
    assert REDACTED in out and out.startswith("before ") and out.endswith(" after")
    assert not [f for f in forms if f in out], out


@pytest.mark.parametrize("line", [
    "created provider 3f1c0d2e 'Sales desk' (smtp_imap) GREEN",
    "provider 3f1c0d2e is GREY (AUTHORIZATION_PENDING): waiting for authorization: call ActivateProvider",
    "smtp.auth smtp.example.test:587 failed in 0.120 s: AUTH_FAILED 535 5.7.8 Username and Password not accepted",
    "4f1c: RETRYING 451 code=451 password: refused by the server",
    "token tokens/7010e32c revoked",
    "secret key file /var/lib/mailgate/mailgate.key is readable by others (mode 644): chmod 600 it",
    "provider 3f1c: access token renewed, valid for 3599 s",
    "a Bearer token is required; the check PASSED",
])
def test_ordinary_log_lines_pass_unchanged(line):
    assert _filtered(line) == line
