"""Opening an authenticated IMAP connection (imapclient)."""
from __future__ import annotations

import imaplib
import socket

import imapclient

from mailgate.drivers.api import CheckResult, ErrorCode

from ._attempt import Attempt
from .auth import Authenticator
from .endpoint import Endpoint
from .errors import TransportError
from .throttle import LoginThrottle

__all__ = ["connect_imap"]


class _IMAP4(imaplib.IMAP4):
    """imaplib.IMAP4 over a socket we opened (and, for implicit TLS, wrapped) ourselves."""

    def __init__(self, sock: socket.socket, host: str, port: int) -> None:
        self._premade = sock
        try:
            super().__init__(host, port)  # reads the greeting and CAPABILITY (closes itself on error)
        except imaplib.IMAP4.error as exc:
            welcome = getattr(self, "welcome", None)
            if not exc.args or exc.args[0] in (None, welcome):
                # imaplib's error is just the greeting, or None when the greeting began
                # with "+" (a POP3 "+OK"): say what went wrong.
                text = welcome.decode("utf-8", "replace").strip() if welcome else ""
                raise imaplib.IMAP4.error(
                    "unexpected greeting (not an IMAP server?)" + (f": {text}" if text else "")) from exc
            raise

    def _create_socket(self, timeout):
        return self._premade


class _IMAPClient(imapclient.IMAPClient):
    """IMAPClient whose imaplib object gets our socket.

    IMAPClient opens its own connection in `_create_IMAP4`; we open the socket
    first so that TCP connect and TLS are separate, timed phases and TLS uses our
    verifying context. IMAPClient then sets its read timeout on that socket.
    """

    def __init__(self, sock: socket.socket, host: str, port: int, *, ssl: bool, timeout: float) -> None:
        self._premade = sock
        super().__init__(host, port, ssl=ssl, timeout=timeout)

    def _create_IMAP4(self):
        return _IMAP4(self._premade, self.host, self.port)


def connect_imap(endpoint: Endpoint, auth: Authenticator, *, timeout: float,
                 ca_pem: str | None = None, throttle: LoginThrottle | None = None,
                 trace: list[CheckResult] | None = None,
                 deadline: float | None = None) -> imapclient.IMAPClient:
    """Returns a connected, secured and logged-in IMAPClient; the caller logs out.

    Trace: imap.connect (TCP connect, greeting, CAPABILITY; TCP only for implicit
    TLS), imap.tls (STARTTLS+handshake, or the implicit handshake and the greeting;
    SKIPPED for NONE), imap.auth. Timeouts and errors as for connect_smtp.
    """
    att = Attempt("imap", endpoint, auth, timeout=timeout, deadline=deadline, throttle=throttle, trace=trace)
    att.check_throttle()
    client: _IMAPClient | None = None
    sock: socket.socket | None = None
    try:
        with att.step("connect"):
            sock = att.open_socket()
            if endpoint.security != "TLS":
                client = _IMAPClient(sock, endpoint.host, endpoint.port, ssl=False, timeout=timeout)
        if endpoint.security == "NONE":
            att.skip("tls", "security NONE: no TLS")
        else:
            with att.step("tls"):
                ctx = att.tls_context(ca_pem)
                if endpoint.security == "TLS":
                    tls_sock = ctx.wrap_socket(sock, server_hostname=endpoint.host)
                    sock = tls_sock
                    client = _IMAPClient(tls_sock, endpoint.host, endpoint.port, ssl=True, timeout=timeout)
                else:
                    if not client.has_capability("STARTTLS"):
                        raise TransportError("imap", "tls", ErrorCode.TLS_FAILED, "server does not offer STARTTLS")
                    client.starttls(ctx)
        with att.step("auth"):
            auth.imap(client)
    except BaseException:
        _close(client, sock)
        raise
    finally:
        att.done()
    return client


def _close(client: imapclient.IMAPClient | None, sock: socket.socket | None) -> None:
    for close in ((client.shutdown if client is not None else None),
                  (sock.close if sock is not None else None)):
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - best effort, the connection is being abandoned
                pass
