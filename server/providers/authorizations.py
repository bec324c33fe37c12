"""Named store operations on pending OAuth sign-ins. Each takes the caller's
session and never commits."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any, Mapping

from sqlalchemy import delete
from sqlalchemy.orm import Session

from ..clock import utcnow
from ..errors import FailedPrecondition, InvalidArgument, Violation
from ..secrets import SecretBox
from ..store.models import AuthorizationRow

# A used or expired state is kept this long, to say "used" or "expired" rather than "unknown".
KEEP = timedelta(days=1)


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def flow_context(key: str) -> str:
    """What a sign-in's sealed flow is bound to (its state's hash)."""
    return f"authorization:{key}"


class AuthorizationStore:
    def __init__(self, session: Session, box: SecretBox):
        self.session, self.box = session, box

    def add(self, provider_id: str, state: str, flow: Mapping[str, Any], ttl: float) -> datetime:
        now = utcnow()
        key = state_hash(state)
        self.session.execute(delete(AuthorizationRow).where(AuthorizationRow.expire_time < now - KEEP))
        row = AuthorizationRow(state_hash=key, provider_id=provider_id, create_time=now,
                               expire_time=now + timedelta(seconds=ttl),
                               flow=self.box.seal(json.dumps(dict(flow)), flow_context(key)))
        self.session.add(row)
        self.session.flush()
        return row.expire_time

    def take(self, state: str) -> tuple[str, dict[str, Any]]:
        """Marks the state used and returns (provider id, flow); refuses a state that
        is unknown, used or expired."""
        key = state_hash(state)
        row = self.session.get(AuthorizationRow, key, with_for_update=True)
        if row is None:
            raise InvalidArgument([Violation("state", "unknown authorization state: it was not issued "
                                                      "by this server, or its provider was deleted")])
        if row.use_time is not None:
            raise FailedPrecondition(f"this authorization was already used at {row.use_time:%Y-%m-%d %H:%M:%S} "
                                     "UTC: call ActivateProvider for a new one",
                                     reason="AUTHORIZATION_STATE_USED", metadata={"provider": row.provider_id})
        if row.expire_time <= utcnow():
            raise FailedPrecondition(f"this authorization expired at {row.expire_time:%Y-%m-%d %H:%M:%S} "
                                     "UTC: call ActivateProvider for a new one",
                                     reason="AUTHORIZATION_STATE_EXPIRED", metadata={"provider": row.provider_id})
        row.use_time = utcnow()
        self.session.flush()
        return row.provider_id, json.loads(self.box.open(row.flow, flow_context(key)))

    def drop_for(self, provider_id: str) -> None:
        """Pending sign-ins of a provider whose account changed cannot complete."""
        self.session.execute(delete(AuthorizationRow).where(AuthorizationRow.provider_id == provider_id))
