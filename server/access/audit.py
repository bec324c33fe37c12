"""The audit trail: one JSON record per change (providers, tokens), send, requeue,
stream opened and closed, and per denied call, on the `mailgate.audit` logger.
It goes with the server's log, or only to MAILGATE_AUDIT_FILE when that is set.

A record names when, who (the token's resource name and display name), from where,
the method, the resource and the outcome (OK or the ErrorInfo reason); never a
secret and never message content: resources are named, not shown."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from typing import Any

from .. import limits, logs
from ..clock import utcnow
from ..errors import MailgateError
from .permissions import INBOUND_MANAGE, MAIL_SEND, PROVIDERS_WRITE, TOKENS_ADMIN
from .tokens import Principal

log = logging.getLogger("mailgate.audit")

# What is audited even when it succeeds; reads are audited only when denied.
CHANGES = frozenset({PROVIDERS_WRITE, MAIL_SEND, INBOUND_MANAGE, TOKENS_ADMIN})
STREAMS = frozenset({"/mailgate.v1.InboundService/StreamInboundMail"})


def audited(method: str, permission: str | None) -> bool:
    return permission in CHANGES or method in STREAMS


def outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "OK"
    if isinstance(exc, MailgateError):
        return exc.reason
    return "CANCELLED" if isinstance(exc, (asyncio.CancelledError, GeneratorExit)) else "INTERNAL"


def resource(request: Any, response: Any = None) -> str:
    """The resource a call touched, by name: the response's when it made one. A request
    is recorded before its fields are checked: what is not shaped as resource names
    (`collection/id`, ids of letters, digits and -._~) or a campaign is not repeated,
    so a record holds nothing a caller could have put there but names (and the log
    filter can pass audit records untouched, see logs.TRUSTED)."""
    found = _resource(request, response)
    if found.startswith("campaigns/"):
        campaign = found.removeprefix("campaigns/")
        return f"campaigns/{logs.redact(campaign)}" if campaign.isprintable() else "campaigns/(not printable)"
    names = found.split(",")
    if found and not all(_NAME.fullmatch(n) for n in names):
        return "(not a resource name)"
    return limits.cut(found, 4 * limits.NAME)


_NAME = re.compile(r"[a-zA-Z]+/[A-Za-z0-9._~-]{1,64}")


def _resource(request: Any, response: Any) -> str:
    for message in (response, request):
        if message is None or not hasattr(message, "DESCRIPTOR"):
            continue
        fields = message.DESCRIPTOR.fields_by_name
        for key in ("name", "provider", "token"):
            if key not in fields:
                continue
            value = getattr(message, key)
            value = getattr(value, "name", value)
            if isinstance(value, str) and value:
                return value
        if "campaign" in fields and message.campaign:
            return f"campaigns/{message.campaign}"
        if "providers" in fields and list(message.providers):
            return ",".join(list(message.providers)[:4])
    return ""


def record(principal: Principal | None, peer: str, method: str, what: str, result: str, **extra: Any) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    entry = {"time": utcnow().isoformat(timespec="milliseconds"), "principal": principal.name if principal else "",
             "principal_display_name": principal.display_name if principal else "", "peer": peer,
             "method": method.rsplit("/", 1)[-1], "resource": what, "outcome": result, **extra}
    log.info(json.dumps(entry, ensure_ascii=False))


def configure(path: str) -> None:
    """Audit records are written whatever the log level; with MAILGATE_AUDIT_FILE,
    to this file (mode 0600) instead of the log."""
    log.setLevel(logging.INFO)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
