"""One error type for every transport failure, and the mapping from library errors.

The message is what an administrator reads: the server's own words when it
answered ("535 5.7.8 Authentication credentials invalid"), otherwise a short
local description ("connection refused", "timed out after 10 s"). No message is
ever built from what we sent, so a password cannot leak through one.
"""
from __future__ import annotations

import ast
import imaplib
import poplib
import re
import smtplib
import socket
import ssl

from mailgate.drivers.api import CheckResult, ErrorCode, Outcome
from mailgate.drivers import network

from .limits import TooLarge

__all__ = ["TransportError", "AuthUnavailable", "TokenError", "classify", "where"]


class TransportError(Exception):
    """A failed step of talking to a mail server.

    side: "smtp" / "imap" / "pop3"; step: "connect" / "tls" / "auth" / "session".
    """

    def __init__(self, side: str, step: str, code: ErrorCode, message: str,
                 retry_after: float | None = None) -> None:
        super().__init__(side, step, code, message, retry_after)
        self.side = side
        self.step = step
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.side}.{self.step} {self.code.value}: {self.message}"

    def __repr__(self) -> str:
        return (f"TransportError(side={self.side!r}, step={self.step!r}, code={self.code.name}, "
                f"message={self.message!r}, retry_after={self.retry_after!r})")

    def check(self, host: str, port: int, duration: float = 0.0) -> CheckResult:
        return CheckResult(id=f"{self.side}.{self.step}", side=self.side, host=host, port=port,
                           outcome=Outcome.FAILED, error_code=self.code,
                           server_message=self.message, duration=duration,
                           retry_after=self.retry_after)


class AuthUnavailable(Exception):
    """Raised by authenticators: the server offers no way to log in that we can use
    (no AUTH, no common mechanism, LOGINDISABLED). Maps to AUTH_UNAVAILABLE."""


class TokenError(Exception):
    """Raised by token sources: no access token. `refused`: the OAuth provider
    refused to renew it (consent revoked, password changed): only a new sign-in
    helps. Otherwise it could not be reached, and a later attempt may work."""

    def __init__(self, message: str, *, refused: bool) -> None:
        super().__init__(message)
        self.message, self.refused = message, refused


# Response codes that say "not over this connection" rather than "wrong credentials":
# RFC 5530 PRIVACYREQUIRED and Dovecot's wording for plaintext refused before TLS.
_NEEDS_TLS = re.compile(r"PRIVACYREQUIRED|plaintext authentication disallowed", re.I)
_BYTES_REPR = re.compile(r"""^b(['"]).*\1$""", re.S)
_SSL_NOISE = re.compile(r"^\[[A-Z0-9_]+: [A-Z0-9_]+\]\s*|\s*\(_ssl\.c:\d+\)$")


def classify(exc: BaseException, side: str, step: str, *, timeout: float | None = None) -> TransportError:
    """Maps an exception raised while talking to a server to a TransportError."""
    if isinstance(exc, TransportError):
        return exc

    def err(code: ErrorCode, message: str) -> TransportError:
        return TransportError(side, step, code, message)

    if isinstance(exc, AuthUnavailable):
        return err(ErrorCode.AUTH_UNAVAILABLE, str(exc))
    # A read refused at one of the limits (limits.py); imaplib re-raises it as an abort
    # of its own, "command: FETCH => ...".
    too_large = next((e for e in (exc, exc.__context__) if isinstance(e, TooLarge)), None)
    if too_large is not None:
        return err(ErrorCode.PROTOCOL_ERROR, too_large.reason)
    if isinstance(exc, TokenError):
        return err(ErrorCode.AUTHORIZATION_REQUIRED if exc.refused else ErrorCode.TOKEN_UNAVAILABLE, exc.message)
    # socket.timeout is TimeoutError since 3.10; smtplib re-raises a timed-out read as
    # SMTPServerDisconnected("Connection unexpectedly closed: timed out").
    if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
        return err(ErrorCode.TIMEOUT, _timed_out(timeout))
    if isinstance(exc, ssl.SSLCertVerificationError):
        return err(ErrorCode.TLS_FAILED, f"certificate verify failed: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return err(ErrorCode.TLS_FAILED, _ssl_message(exc))
    if isinstance(exc, smtplib.SMTPException):  # before OSError: SMTPException subclasses it
        return _classify_smtp(exc, err, step)
    if isinstance(exc, imaplib.IMAP4.error):
        return _classify_imap(exc, err, step, timeout)
    if isinstance(exc, poplib.error_proto):
        return _classify_pop3(exc, err, step)
    if isinstance(exc, network.Refused):
        return err(ErrorCode.CONNECT_FAILED, str(exc))
    if isinstance(exc, ConnectionRefusedError):
        return err(ErrorCode.CONNECT_FAILED, "connection refused")
    if isinstance(exc, socket.gaierror):
        return err(ErrorCode.CONNECT_FAILED, "name does not resolve")
    if isinstance(exc, OSError):
        text = (exc.strerror or str(exc) or type(exc).__name__).lower()
        if step == "connect":
            return err(ErrorCode.CONNECT_FAILED, text)
        return err(ErrorCode.PROTOCOL_ERROR, f"connection lost: {text}")
    if isinstance(exc, UnicodeError):
        return err(ErrorCode.PROTOCOL_ERROR, "server sent bytes that are not valid text")
    return err(ErrorCode.PROTOCOL_ERROR, f"unexpected error: {type(exc).__name__}")


def _timed_out(timeout: float | None) -> str:
    return f"timed out after {timeout:g} s" if timeout else "timed out"


def _ssl_message(exc: ssl.SSLError) -> str:
    text = _SSL_NOISE.sub("", str(exc.args[1] if len(exc.args) > 1 else exc)) or exc.reason or "error"
    hint = ""
    if exc.reason == "WRONG_VERSION_NUMBER":
        hint = " (the server did not answer in TLS: is this a plain-text/STARTTLS port?)"
    return f"TLS failed: {text}{hint}"


def _decode(value: object) -> str:
    if isinstance(value, str) and _BYTES_REPR.match(value):
        # imapclient's LoginError carries str(b'...') of the server's reply
        value = ast.literal_eval(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split())  # multi-line replies on one line


def _classify_smtp(exc: smtplib.SMTPException, err, step: str) -> TransportError:
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        cause = exc.__context__
        if isinstance(cause, OSError) and cause.strerror:
            return err(ErrorCode.PROTOCOL_ERROR, f"connection lost: {cause.strerror.lower()}")
        return err(ErrorCode.PROTOCOL_ERROR, "server closed the connection")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        if step == "tls":
            return err(ErrorCode.TLS_FAILED, "server does not offer STARTTLS")
        if step == "auth":
            return err(ErrorCode.AUTH_UNAVAILABLE, "server offers no AUTH")
        return err(ErrorCode.PROTOCOL_ERROR, _decode(exc))
    if isinstance(exc, smtplib.SMTPResponseException):
        words = f"{exc.smtp_code} {_decode(exc.smtp_error)}"
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            if _NEEDS_TLS.search(words):
                return err(ErrorCode.AUTH_UNAVAILABLE, words)
            return err(ErrorCode.AUTH_FAILED, words)
        if exc.smtp_code == -1:  # smtplib's code for a reply that does not start with digits
            what = "greeting" if step == "connect" else "reply"
            return err(ErrorCode.PROTOCOL_ERROR,
                       f"unexpected {what} (not an SMTP server?): {_decode(exc.smtp_error)}")
        if isinstance(exc, smtplib.SMTPConnectError):  # greeting other than 220
            return err(ErrorCode.CONNECT_FAILED, words)
        if step == "tls":  # STARTTLS refused
            return err(ErrorCode.TLS_FAILED, words)
        return err(ErrorCode.PROTOCOL_ERROR, words)
    text = _decode(exc)
    if step == "auth" and "authentication method" in text:
        return err(ErrorCode.AUTH_UNAVAILABLE, "no usable authentication mechanism")
    return err(ErrorCode.PROTOCOL_ERROR, text)


def _classify_imap(exc: imaplib.IMAP4.error, err, step: str, timeout: float | None) -> TransportError:
    # imapclient prefixes the server's words with "<command> failed: ".
    arg = exc.args[0] if exc.args else exc
    if isinstance(arg, str):
        arg = re.sub(r"^\w+ failed: ", "", arg)
    text = _decode(arg)
    if isinstance(exc, imaplib.IMAP4.abort):
        if "timed out" in text:  # imaplib turns a timed-out send into abort
            return err(ErrorCode.TIMEOUT, _timed_out(timeout))
        return err(ErrorCode.PROTOCOL_ERROR, text)
    if step == "auth":
        if _NEEDS_TLS.search(text):
            return err(ErrorCode.AUTH_UNAVAILABLE, text)
        return err(ErrorCode.AUTH_FAILED, text)
    if step == "tls":
        return err(ErrorCode.TLS_FAILED, text)
    return err(ErrorCode.PROTOCOL_ERROR, text)


def _classify_pop3(exc: poplib.error_proto, err, step: str) -> TransportError:
    arg = exc.args[0] if exc.args else ""
    text = _decode(arg)
    if not isinstance(arg, bytes):  # poplib's own (str) errors: "-ERR EOF", "line too long"
        return err(ErrorCode.PROTOCOL_ERROR,
                   "server closed the connection" if text == "-ERR EOF" else text)
    if step == "auth":  # bytes: the server's -ERR reply
        if _NEEDS_TLS.search(text):
            return err(ErrorCode.AUTH_UNAVAILABLE, text)
        return err(ErrorCode.AUTH_FAILED, text)
    if step == "tls":
        return err(ErrorCode.TLS_FAILED, text)
    if step == "connect":
        return err(ErrorCode.PROTOCOL_ERROR, f"unexpected greeting (not a POP3 server?): {text}")
    return err(ErrorCode.PROTOCOL_ERROR, text)


def where(endpoint) -> str:
    """`host:port`, IPv6 hosts in brackets."""
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    return f"{host}:{endpoint.port}"
