"""The one catalog of words for a provider's state: what a failed check means to an
administrator, and the reason that goes with each cause. Code branches on causes
(state.Cause) and error codes; only people read these."""
from __future__ import annotations

from datetime import datetime

from mailgate.drivers.api import CheckResult, ErrorCode, Report

from ..errors import ChecksFailed
from .state import Cause, State, Status

_SIDES = {"smtp": "SMTP", "imap": "IMAP", "pop3": "POP3"}


def describe(c: CheckResult, mailbox: str | None = None) -> str:
    """One sentence an administrator can act on. `mailbox`: the folder a watched
    mailbox's check was about."""
    side = _SIDES.get(c.side, c.side.upper())
    host = f"[{c.host}]" if ":" in c.host else c.host
    where = f"{host}:{c.port}"
    said = f": {c.server_message}" if c.server_message else ""
    if c.id.endswith(".select") and mailbox:
        return f"{side} folder {mailbox!r} cannot be opened at {where}{said}"
    return {
        ErrorCode.AUTH_FAILED: f"{side} authentication failed at {where}{said}",
        ErrorCode.CONNECT_FAILED: f"cannot connect to the {side} server {where}{said}",
        ErrorCode.TLS_FAILED: f"TLS with the {side} server {where} failed{said}",
        ErrorCode.TIMEOUT: f"the {side} server {where} did not answer in time{said}",
        ErrorCode.PROTOCOL_ERROR: f"the {side} server {where} answered unexpectedly{said}",
        ErrorCode.AUTH_UNAVAILABLE: f"the {side} server {where} offers no usable login{said}",
        ErrorCode.BACKOFF: f"{side} login at {where} not retried yet{said}",
        ErrorCode.AUTHORIZATION_REQUIRED: f"re-authorization required{said}",
        ErrorCode.TOKEN_UNAVAILABLE: f"cannot renew the access token for {side} at {where}{said}",
    }.get(c.error_code, f"{c.id} failed at {where}{said}")


def checks_failed(report: Report, doing: str) -> ChecksFailed:
    """The error for checks that failed while `doing` something ("not created")."""
    failures = report.failures
    first = failures[0]
    reason = f"{first.side}_{first.error_code.value}".upper()
    message = f"{doing}: " + "; ".join(describe(c) for c in failures)
    metadata = {"side": first.side, "check": first.id, "host": first.host, "port": str(first.port),
                "error_code": first.error_code.value,
                "failed_checks": ",".join(c.id for c in failures)}
    return ChecksFailed(message, reason=reason, report=report, metadata=metadata,
                        retry_after=first.retry_after)


# -- a status for each thing that happens to a provider
def checked(how: str) -> Status:
    return Status(State.GREEN, Cause.CHECKS_PASSED, how)


def activation_failed(report: Report) -> Status:
    return Status(State.RED, Cause.CHECKS_FAILED, checks_failed(report, "activation failed").message)


def sign_in_pending(why: str) -> Status:
    return Status(State.GREY, Cause.AUTHORIZATION_PENDING, why)


def sign_in_failed(why: str) -> Status:
    return Status(State.RED, Cause.AUTHORIZATION_FAILED, why)


def signed_in(account: str, report: Report) -> Status:
    if report.ok:
        return checked(f"signed in as {account}; mailbox checked")
    return Status(State.RED, Cause.CHECKS_FAILED, checks_failed(report, f"signed in as {account}, but").message)


def authorization_lost(message: str) -> Status:
    return Status(State.RED, Cause.AUTHORIZATION_LOST, f"re-authorization required: {message}")


def login_refused(message: str) -> Status:
    return Status(State.RED, Cause.LOGIN_REFUSED, f"sending failed: the SMTP server refused the login: {message}")


def mailbox_down(problem: CheckResult, mailbox: str | None = None) -> Status:
    return Status(State.RED, Cause.MAILBOX_UNREACHABLE, f"receiving stopped: {describe(problem, mailbox)}")


RECOVERED = Status(State.GREEN, Cause.RECOVERED, "mailbox reachable again")


# -- the words of a provider's events (history.py) other than its state changes
def reconnecting(problem: CheckResult, mailbox: str) -> str:
    return f"{describe(problem, mailbox)}; trying again"


def token_renewed(valid_for: float) -> str:
    return f"access token renewed, valid for {valid_for:.0f} s"


def token_unavailable(message: str) -> str:
    return f"the access token could not be renewed: {message}; trying again later"


def token_refused(message: str) -> str:
    return f"renewing the access token was refused: {message}"


def sign_in_started(expires: datetime) -> str:
    return f"sign-in started, to complete by {expires:%Y-%m-%d %H:%M:%S} UTC"


def signed_in_as(account: str) -> str:
    return f"signed in as {account}"
