"""Checking that a server accepts the credentials, as a list of checks."""
from __future__ import annotations

import logging

from mailgate.drivers.api import CheckResult

from . import _watchdog
from .auth import Authenticator
from .endpoint import Endpoint
from .errors import TransportError
from .imap import connect_imap
from .pop3 import connect_pop3
from .smtp import connect_smtp
from .throttle import LoginThrottle

__all__ = ["probe"]

log = logging.getLogger("mailgate.transport")


def probe(side: str, endpoint: Endpoint, auth: Authenticator, *, timeout: float,
          ca_pem: str | None = None, throttle: LoginThrottle | None = None,
          deadline: float | None = None) -> list[CheckResult]:
    """Connects, secures and logs in on `side` ("smtp", "imap", "pop3"), then leaves
    politely. Returns the trace (<side>.connect, <side>.tls, <side>.auth); a
    server's failure is a FAILED check, never an exception."""
    if side not in _SIDES:
        raise ValueError(f"side must be one of {', '.join(_SIDES)}, not {side!r}")
    connect, leave = _SIDES[side]
    trace: list[CheckResult] = []
    try:
        conn = connect(endpoint, auth, timeout=timeout, ca_pem=ca_pem, throttle=throttle,
                       trace=trace, deadline=deadline)
    except TransportError:
        return trace  # the failure is in the trace
    try:
        # The attempt's deadline ended with the login: leaving gets one of its own,
        # or a server dripping its goodbye would hold the worker.
        guard = _watchdog.watch(_socket(conn), timeout)
        try:
            leave(conn)
        finally:
            guard.cancel()
    except Exception as exc:  # noqa: BLE001 - we are done with this server either way
        log.debug("%s %s: leaving failed (%s), ignored", side, endpoint, type(exc).__name__)
        _force_close(conn)
    return trace


def _socket(conn):
    return conn.socket() if callable(getattr(conn, "socket", None)) else conn.sock  # IMAPClient; smtplib, poplib


def _force_close(conn) -> None:
    for name in ("shutdown", "close"):  # IMAPClient has shutdown, smtplib/poplib close
        close = getattr(conn, name, None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001
                pass
            return


_SIDES = {
    "smtp": (connect_smtp, lambda conn: conn.quit()),
    "imap": (connect_imap, lambda client: client.logout()),
    "pop3": (connect_pop3, lambda conn: conn.quit()),
}
