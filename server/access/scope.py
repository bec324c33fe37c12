"""Scope: a token limited to campaigns and/or providers sees only those. Handlers
check each resource they touch here; List calls add `where` to their query, so a
page holds only what the caller may see. Out of scope answers exactly as a
resource that does not exist (PERMISSION_DENIED naming the permission, AIP-211),
so a scoped caller cannot probe for names."""
from __future__ import annotations

import contextvars
from typing import Any, Awaitable, Callable, TypeVar

from sqlalchemy import ColumnElement, select

from ..errors import NotFound, denied
from ..store.models import ProviderRow
from .tokens import UNRESTRICTED, Principal

T = TypeVar("T")

_caller: contextvars.ContextVar[tuple[Principal, str]] = contextvars.ContextVar(
    "mailgate_caller", default=(UNRESTRICTED, ""))


def enter(principal: Principal, permission: str) -> None:
    """The interceptor names the caller and the permission its call needed."""
    _caller.set((principal, permission))


def current() -> Principal:
    """The caller of the RPC being handled (UNRESTRICTED when authentication is off)."""
    return _caller.get()[0]


def refuse() -> Exception:
    return denied(_caller.get()[1])


def require(permission: str) -> None:
    """For a request that asks more than its method's permission (raw bytes on a stream)."""
    if not current().may(permission):
        raise denied(permission)


def check(provider_id: str, campaign: str) -> None:
    """A provider, or what it sent or received, must be within the caller's scope."""
    if not current().sees(provider_id, campaign):
        raise refuse()


def check_new(campaign: str) -> None:
    """A provider about to be created (or checked as a candidate): a provider-scoped
    caller cannot name a new one, a campaign-scoped one only for its campaigns."""
    principal = current()
    if principal.providers or (principal.campaigns and campaign not in principal.campaigns):
        raise refuse()


async def found(load: Awaitable[T]) -> T:
    """`load`'s resource. For a scoped caller, NotFound is refused like anything out
    of scope; an unscoped caller may see everything and learns NotFound."""
    try:
        return await load
    except NotFound:
        if current().scoped:
            raise refuse() from None
        raise


async def visible(load: Awaitable[T], place: Callable[[T], tuple[str, str]]) -> T:
    """`load`'s resource if in scope (see found)."""
    resource = await found(load)
    if current().scoped:
        check(*place(resource))
    return resource


async def in_sight(key: str, load: Callable[[str], Awaitable[T]], place: Callable[[T], tuple[str, str]]) -> str:
    """`key`, once a scoped caller is known to see the resource `load(key)` reads;
    for the others nothing is read."""
    if current().scoped:
        await visible(load(key), place)
    return key


def where(principal: Principal, provider_id: Any, campaign: Any | None = None) -> list[ColumnElement[bool]]:
    """Conditions a List query adds: `provider_id` is the listed rows' provider
    column; `campaign` their campaign column, or None to take the provider's."""
    conditions: list[ColumnElement[bool]] = []
    if principal.providers:
        conditions.append(provider_id.in_(sorted(principal.providers)))
    if principal.campaigns:
        campaigns = sorted(principal.campaigns)
        if campaign is not None:
            conditions.append(campaign.in_(campaigns))
        else:
            conditions.append(provider_id.in_(select(ProviderRow.id).where(ProviderRow.campaign.in_(campaigns))))
    return conditions
