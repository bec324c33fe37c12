"""Numbers for messages their source knows by opaque ids (drivers.api.InboundSink.numbers).
Each operation takes the caller's session and never commits."""
from __future__ import annotations

from typing import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..store.models import MailboxIdRow, MailboxPositionRow


class MailboxIds:
    def __init__(self, session: Session):
        self.session = session

    def numbers(self, provider_id: str, folder: str, ids: Sequence[str]) -> dict[str, int]:
        """{id: number} for the messages the source has now, in the order given; an id
        seen for the first time gets the next number. Ids no longer given (their
        messages gone from the source) are forgotten."""
        t = MailboxIdRow
        mine = (t.provider_id == provider_id, t.folder == folder)
        known = dict(self.session.execute(select(t.source_id, t.number).where(*mine)).all())
        # Numbers are never reused, or new mail would pass for mail already queued.
        pos = self.session.get(MailboxPositionRow, (provider_id, folder))
        top = max([pos.last_uid if pos else 0, *known.values()])
        gone = set(known) - set(ids)
        if gone:
            self.session.execute(delete(t).where(*mine, t.source_id.in_(gone)))
        out = {}
        for source_id in ids:
            if source_id not in known:
                top += 1
                known[source_id] = top
                self.session.add(t(provider_id=provider_id, folder=folder, source_id=source_id, number=top))
            out[source_id] = known[source_id]
        self.session.flush()
        return out
