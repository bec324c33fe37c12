"""pytest fixtures for the real test servers (loaded by mailgate.testing.plugin).

Session-scoped, started once on first use:

* ``mail_ca``: the TestCA every server's certificate comes from; ``mail_ca.client_context()``
  trusts it. ``other_ca``: an unrelated CA, for "certificate not trusted" tests.
* ``mail_users``: read-only {login: password}; one address-style and one plain login.
* ``dovecot``: a running Dovecot serving ``mail_users``; ``dovecot_no_idle``: the same
  without the IDLE capability (polling tests).
* ``smtp_servers``: {"NONE" | "STARTTLS" | "TLS": SmtpServer}, all with ``mail_users``.
* ``oauth_server``: an OAuthServer (HTTPS and HTTP on 127.0.0.1, certificate from
  ``mail_ca``) with the clients :data:`OAUTH_CLIENTS` (Outlook and Gmail apps).
* ``oauth_dovecot``: a Dovecot serving ``mail_users`` that also takes XOAUTH2 and
  OAUTHBEARER with ``oauth_server``'s tokens (passwords keep working).
* ``oauth_smtp``: a STARTTLS SmtpServer whose XOAUTH2 takes ``oauth_server``'s tokens.

Function-scoped:

* ``smtp_server``: ``smtp_server("TLS")`` -> that SmtpServer.
* ``clean_dovecot``: ``dovecot``, running, with ``mail_users`` and empty mailboxes.
* ``dovecot_factory``: ``dovecot_factory(imap_idle=..., client_limit=...)`` -> a new
  started Dovecot, closed after the test.
* ``silent_listener`` (SilentListener) and ``closed_port`` (ClosedPort): ``.host``, ``.port``.
* ``clean_oauth``: ``oauth_server`` after ``reset()``: default knobs, no codes or tokens,
  empty ``requests``. ``oauth_server`` itself is not reset between tests: a test that
  turns a knob (refuse_refresh, drop_token_requests...) or counts requests asks for
  ``clean_oauth``.

Isolation between tests: before every test, the SMTP servers already started are
reset (messages, rejected, fail_next cleared, deliver_to/xoauth2 restored) by the
autouse ``_reset_smtp_servers``, so nothing carries over whichever fixture a test uses.
Dovecot keeps its mail between tests (emptying it costs IMAP round trips and would
disturb sessions a session-scoped service keeps open): tests either look for their
own unique message (Subject/Message-ID) or ask for ``clean_dovecot``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType

import pytest

from .servers import MODES, ClosedPort, Dovecot, SilentListener, SmtpServer, TestCA
from .servers.oauth import OAuthServer

__all__ = [
    "MAIL_USERS",
    "mail_ca", "other_ca", "mail_users",
    "dovecot", "dovecot_no_idle", "clean_dovecot", "dovecot_factory",
    "smtp_servers", "smtp_server", "_reset_smtp_servers",
    "silent_listener", "closed_port",
    "OUTLOOK_CLIENT_ID", "OUTLOOK_CLIENT_SECRET", "GMAIL_CLIENT_ID", "GMAIL_CLIENT_SECRET",
    "OAUTH_CLIENTS",
    "oauth_server", "oauth_dovecot", "oauth_smtp", "clean_oauth",
]

MAIL_USERS: Mapping[str, str] = MappingProxyType({
    "agent@example.test": "s3cret-agent",  # login is an address
    "support": "s3cret-support",  # login is a bare user name
})

# The OAuth apps registered on oauth_server (client_id -> client_secret).
OUTLOOK_CLIENT_ID, OUTLOOK_CLIENT_SECRET = "mailgate-outlook", "outlook-secret"
GMAIL_CLIENT_ID, GMAIL_CLIENT_SECRET = "mailgate-gmail", "gmail-secret"
OAUTH_CLIENTS: Mapping[str, str] = MappingProxyType({
    OUTLOOK_CLIENT_ID: OUTLOOK_CLIENT_SECRET,
    GMAIL_CLIENT_ID: GMAIL_CLIENT_SECRET,
})

# SMTP servers started by smtp_servers, reset before each test.
_started_smtp: list[SmtpServer] = []


@pytest.fixture(scope="session")
def mail_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """The CA of every test server's certificate (client_context() trusts it)."""
    return TestCA.create(tmp_path_factory.mktemp("mail-ca"))


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """An unrelated CA: its client_context() rejects the test servers."""
    return TestCA.other(tmp_path_factory.mktemp("other-ca"))


@pytest.fixture(scope="session")
def mail_users() -> Mapping[str, str]:
    """Read-only {login: password} known to Dovecot and the SMTP servers."""
    return MAIL_USERS


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory, mail_users, mail_ca) -> Iterator[Dovecot]:
    """A running Dovecot (IMAP, POP3, LMTP) for the session; mail is kept between
    tests (see clean_dovecot)."""
    with Dovecot(tmp_path_factory.mktemp("dovecot"), mail_users, mail_ca) as server:
        yield server


@pytest.fixture(scope="session")
def dovecot_no_idle(tmp_path_factory, mail_users, mail_ca) -> Iterator[Dovecot]:
    """A running Dovecot without the IDLE capability, for the session."""
    with Dovecot(tmp_path_factory.mktemp("dovecot-no-idle"), mail_users, mail_ca,
                 imap_idle=False) as server:
        yield server


@pytest.fixture
def clean_dovecot(dovecot: Dovecot, mail_users) -> Dovecot:
    """The session's Dovecot, running, with mail_users and empty mailboxes."""
    if not dovecot.running:  # a test stopped it
        dovecot.start()
    if dovecot.users != dict(mail_users):  # a test changed users (up to 1 s)
        dovecot.set_users(mail_users)
    dovecot.clear()
    return dovecot


@pytest.fixture
def dovecot_factory(tmp_path_factory, mail_users, mail_ca) -> Iterator[Callable[..., Dovecot]]:
    """make(**Dovecot keyword arguments) -> a started Dovecot, closed after the test."""
    made: list[Dovecot] = []

    def make(**kwargs) -> Dovecot:
        server = Dovecot(tmp_path_factory.mktemp("dovecot"), mail_users, mail_ca, **kwargs)
        made.append(server)
        server.start()
        return server

    yield make
    for server in made:
        server.close()


@pytest.fixture(scope="session")
def smtp_servers(mail_users, mail_ca) -> Iterator[dict[str, SmtpServer]]:
    """{"NONE" | "STARTTLS" | "TLS": SmtpServer} for the session, reset before each test."""
    servers = {mode: SmtpServer(mode, mail_users, mail_ca) for mode in MODES}
    try:
        for server in servers.values():
            server.start()
            _started_smtp.append(server)
        yield servers
    finally:
        for server in servers.values():
            server.stop()
            if server in _started_smtp:
                _started_smtp.remove(server)


@pytest.fixture
def smtp_server(smtp_servers) -> Callable[[str], SmtpServer]:
    """smtp_server(mode) -> the session's SmtpServer for that mode."""
    return smtp_servers.__getitem__


@pytest.fixture(autouse=True)
def _reset_smtp_servers() -> None:
    """Before each test: forget what the started SMTP servers received and were told."""
    for server in _started_smtp:
        server.reset()


@pytest.fixture(scope="session")
def oauth_server(mail_ca) -> Iterator[OAuthServer]:
    """The session's OAuth 2.0 / OIDC server (MSAL: ``authority()``; Google:
    ``token_uri``), with the OAUTH_CLIENTS apps. Not reset between tests: see
    clean_oauth."""
    with OAuthServer(mail_ca, clients=dict(OAUTH_CLIENTS)) as server:
        yield server


@pytest.fixture
def clean_oauth(oauth_server: OAuthServer) -> OAuthServer:
    """oauth_server after reset(): default knobs, no tokens, empty requests."""
    oauth_server.reset()
    return oauth_server


@pytest.fixture(scope="session")
def oauth_dovecot(tmp_path_factory, mail_users, mail_ca, oauth_server) -> Iterator[Dovecot]:
    """A running Dovecot serving mail_users by password and by XOAUTH2/OAUTHBEARER
    with oauth_server's tokens (a user's own, or app-only for any mailbox)."""
    with Dovecot(tmp_path_factory.mktemp("oauth-dovecot"), mail_users, mail_ca,
                 oauth2_introspection_url=oauth_server.introspection_uri) as server:
        yield server


@pytest.fixture(scope="session")
def oauth_smtp(mail_users, mail_ca, oauth_server) -> Iterator[SmtpServer]:
    """A STARTTLS SmtpServer taking mail_users' passwords and oauth_server's tokens
    (XOAUTH2); reset before each test like smtp_servers."""
    server = SmtpServer("STARTTLS", mail_users, mail_ca, xoauth2=oauth_server.token_valid)
    try:
        server.start()
        _started_smtp.append(server)
        yield server
    finally:
        server.stop()
        if server in _started_smtp:
            _started_smtp.remove(server)


@pytest.fixture
def silent_listener() -> Iterator[SilentListener]:
    """A TCP listener that accepts and never answers (timeouts)."""
    with SilentListener() as listener:
        yield listener


@pytest.fixture
def closed_port() -> Iterator[ClosedPort]:
    """A port where connections are refused (.host, .port)."""
    with ClosedPort() as port:
        yield port
