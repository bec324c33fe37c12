"""Domain errors. They know nothing of gRPC: server/rpc_errors.py maps each kind
to a status code and google.rpc details, in one place."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from mailgate.drivers.api import Report

from . import limits


@dataclass(frozen=True)
class Violation:
    """A bad field. `field` is a domain path: `account`, `reply_to[1]`,
    `settings.smtp.port`, `secrets.password`."""

    field: str
    description: str


class MailgateError(Exception):
    reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None,
                 metadata: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason
        self.metadata = dict(metadata or {})


class InvalidArgument(MailgateError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[Violation], message: str | None = None):
        self.violations = violations
        super().__init__(message or _summary(violations))


def _summary(violations: list[Violation], shown: int = 3) -> str:
    """The first few violations in words; the BadRequest detail has them all (up to
    limits.VIOLATIONS)."""
    words = "; ".join(f"{limits.cut(v.field, 64)}: {limits.cut(v.description, 120)}" for v in violations[:shown])
    if len(violations) > shown:
        words += f"; and {len(violations) - shown:,} more"
    return words


class NotFound(MailgateError):
    reason = "NOT_FOUND"


class AlreadyExists(MailgateError):
    reason = "ALREADY_EXISTS"


def name_taken(display_name: str) -> AlreadyExists:
    name = display_name.strip()
    return AlreadyExists(f"a provider named {name!r} already exists", metadata={"display_name": name})


class Aborted(MailgateError):
    reason = "ETAG_MISMATCH"


def etag_mismatch(provider_id: str, version: int) -> Aborted:
    return Aborted(f"provider {provider_id!r} changed meanwhile (etag W/\"{version}\"): "
                   "read it again and retry", metadata={"provider": provider_id})


class Unauthenticated(MailgateError):
    """No credential, or one that is not (or no longer) valid."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(MailgateError):
    reason = "PERMISSION_DENIED"


def denied(permission: str) -> PermissionDenied:
    """The same answer whether or not the resource exists (AIP-211)."""
    return PermissionDenied(f"the caller lacks the permission {permission!r} for this request, "
                            "or the resource does not exist", metadata={"permission": permission})


class ResourceExhausted(MailgateError):
    """The server is at one of its admission limits: try again after `retry_after` seconds."""

    reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, retry_after: float, reason: str | None = None,
                 metadata: Mapping[str, str] | None = None):
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after


class FailedPrecondition(MailgateError):
    """The request is fine, but the resource is not in a state that allows it."""


class ChecksFailed(FailedPrecondition):
    """The provider's servers refused it (login, TLS, connection): nothing was stored."""

    def __init__(self, message: str, *, reason: str, report: Report,
                 metadata: Mapping[str, str] | None = None, retry_after: float | None = None):
        super().__init__(message, reason=reason, metadata=metadata)
        self.report = report
        self.retry_after = retry_after


@dataclass
class Violations:
    """Collects violations; `raise_if_any()` at the end of a validation pass."""

    items: list[Violation] = field(default_factory=list)

    def add(self, path: str, description: str) -> None:
        self.items.append(Violation(path, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)
