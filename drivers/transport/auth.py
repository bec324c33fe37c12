"""Authenticators: how a connection logs in, independent of how it was opened.

An authenticator knows the credentials and one login method per protocol:
PasswordAuth (user name and password) and XOAuth2Auth (an OAuth2 bearer token
from a TokenSource). Everything else about a connection is shared.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import poplib
import secrets
import smtplib
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

from .errors import AuthUnavailable

if TYPE_CHECKING:
    import imapclient

__all__ = ["Authenticator", "PasswordAuth", "XOAuth2Auth", "TokenSource", "smtp_sasl", "fingerprint"]

# Keyed per process: a fingerprint is stable for the life of the process (what the
# login throttle needs) but useless for guessing passwords offline should one end up
# in a log or a dump.
_FINGERPRINT_KEY = secrets.token_bytes(32)


def fingerprint(kind: str, username: str, secret: str) -> str:
    """HMAC-SHA256 of (kind, username, secret) under a per-process key, hex."""
    msg = b"\0".join(s.encode("utf-8") for s in (kind, username, secret))
    return hmac.new(_FINGERPRINT_KEY, msg, hashlib.sha256).hexdigest()


@runtime_checkable
class Authenticator(Protocol):
    """Logs an open, secured connection in. Methods raise the library's own errors
    (or AuthUnavailable); the caller classifies them."""

    username: str
    kind: str  # "password", "xoauth2": for logs

    def fingerprint(self) -> str: ...
    def smtp(self, conn: smtplib.SMTP) -> None: ...
    def imap(self, client: "imapclient.IMAPClient") -> None: ...
    def pop3(self, conn: poplib.POP3) -> None: ...


def smtp_sasl(conn: smtplib.SMTP, mechanism: str,
              respond: Callable[[bytes | None], bytes | None]) -> None:
    """One SMTP AUTH exchange. `respond(None)` gives the initial response (or None
    to wait for a challenge); `respond(challenge)` answers each 334.

    Our own loop rather than smtplib's `login`/`auth`: `login` retries every
    offered mechanism after a 535, so one wrong password costs up to three failed
    logins on the account (lock-out counters); and `auth` encodes responses as
    ASCII, which rejects non-ASCII passwords. Raises SMTPAuthenticationError.
    """
    first = respond(None)
    arg = mechanism if first is None else f"{mechanism} {_b64(first)}"
    code, resp = conn.docmd("AUTH", arg)
    for _ in range(5):  # a server that keeps challenging is broken
        if code != 334:
            break
        answer = respond(base64.b64decode(resp)) or b""
        code, resp = conn.docmd(_b64(answer))
    if code == 334:
        conn.docmd("*")  # RFC 4954: cancel the exchange
        raise smtplib.SMTPAuthenticationError(code, b"too many challenges; authentication cancelled")
    if code not in (235, 503):  # 503: already authenticated
        raise smtplib.SMTPAuthenticationError(code, resp)


def smtp_mechanisms(conn: smtplib.SMTP) -> list[str]:
    """The SASL mechanisms the server offers on this connection (EHLO's AUTH line)."""
    if not conn.has_extn("auth"):
        raise AuthUnavailable("server offers no AUTH on this connection")
    return conn.esmtp_features["auth"].upper().split()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class PasswordAuth:
    """Username and password: SMTP AUTH PLAIN/LOGIN/CRAM-MD5, IMAP LOGIN, POP3 USER/PASS."""

    __slots__ = ("username", "_password")
    kind = "password"
    # Most widely supported first. CRAM-MD5 last: servers that advertise it often
    # cannot use it for accounts whose password is stored hashed.
    SMTP_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._password = password

    def __repr__(self) -> str:
        return f"PasswordAuth(username={self.username!r}, password='***')"

    __str__ = __repr__

    def fingerprint(self) -> str:
        return fingerprint(self.kind, self.username, self._password)

    def smtp(self, conn: smtplib.SMTP) -> None:
        offered = smtp_mechanisms(conn)
        mech = next((m for m in self.SMTP_MECHANISMS if m in offered), None)
        if mech is None:
            raise AuthUnavailable(
                f"no usable authentication mechanism (server offers {' '.join(offered) or 'none'})")
        user, pw = self.username.encode("utf-8"), self._password.encode("utf-8")

        def respond(challenge: bytes | None) -> bytes | None:
            if mech == "PLAIN":
                return b"\0" + user + b"\0" + pw
            if challenge is None:  # LOGIN and CRAM-MD5 wait for the server's challenge
                return None
            if mech == "LOGIN":  # "Username:", then "Password:"
                return user if b"user" in challenge.lower() else pw
            return user + b" " + hmac.new(pw, challenge, "md5").hexdigest().encode("ascii")

        smtp_sasl(conn, mech, respond)

    def imap(self, client: "imapclient.IMAPClient") -> None:
        if client.has_capability("LOGINDISABLED"):
            raise AuthUnavailable("server refuses LOGIN on this connection (LOGINDISABLED): use STARTTLS or TLS")
        if self._password.isascii() and self.username.isascii():
            client.login(self.username, self._password)
        elif client.has_capability("AUTH=PLAIN"):  # imaplib sends LOGIN arguments as ASCII only
            client.plain_login(self.username, self._password)
        else:
            raise AuthUnavailable("non-ASCII credentials need AUTHENTICATE PLAIN, which the server does not offer")

    def pop3(self, conn: poplib.POP3) -> None:
        conn.user(self.username)
        conn.pass_(self._password)


class TokenSource(Protocol):
    """Hands out a valid OAuth2 access token, renewing it when needed. Blocking.
    Raises transport.errors.TokenError when it cannot."""

    def token(self) -> str: ...
    def invalidate(self, token: str) -> None:
        """The server refused this token: the next token() must renew it."""


class XOAuth2Auth:
    """SASL XOAUTH2 with a bearer token (Gmail, Microsoft 365): SMTP AUTH XOAUTH2,
    IMAP AUTHENTICATE XOAUTH2. `identity` names the authorization the tokens come
    from (it changes when someone signs in again): the fingerprint digests it, not
    the token, so computing one never renews a token."""

    __slots__ = ("username", "_source", "_identity")
    kind = "xoauth2"

    def __init__(self, username: str, source: TokenSource, identity: str) -> None:
        self.username, self._source, self._identity = username, source, identity

    def __repr__(self) -> str:
        return f"XOAuth2Auth(username={self.username!r})"

    __str__ = __repr__

    def fingerprint(self) -> str:
        return fingerprint(self.kind, self.username, self._identity)

    def _initial_response(self, token: str) -> bytes:
        return f"user={self.username}\x01auth=Bearer {token}\x01\x01".encode("utf-8")

    def smtp(self, conn: smtplib.SMTP) -> None:
        if "XOAUTH2" not in smtp_mechanisms(conn):
            raise AuthUnavailable("server does not offer AUTH XOAUTH2")
        token = self._source.token()
        # A refused token gets a 334 with an error document; the empty answer ends
        # the exchange with the 535 (RFC 7628 style, as Gmail and Outlook do).
        try:
            smtp_sasl(conn, "XOAUTH2", lambda challenge: self._initial_response(token)
                      if challenge is None else b"")
        except smtplib.SMTPAuthenticationError:
            self._source.invalidate(token)
            raise

    def imap(self, client: "imapclient.IMAPClient") -> None:
        if not client.has_capability("AUTH=XOAUTH2"):
            raise AuthUnavailable("server does not offer AUTHENTICATE XOAUTH2")
        from imapclient.exceptions import LoginError

        token = self._source.token()
        try:
            client.oauth2_login(self.username, token, mech="XOAUTH2")
        except LoginError:
            self._source.invalidate(token)
            raise

    def pop3(self, conn: poplib.POP3) -> None:
        raise AuthUnavailable("POP3 with OAuth2 is not supported: use IMAP")
