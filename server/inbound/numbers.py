"""Named store operations on POP3 bookkeeping. Each takes the caller's session and
never commits."""
from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mailgate.drivers.transport.pop3_poll import UIDVALIDITY  # POP3 has none: its messages are queued under this

from ..store.models import MailboxPositionRow, Pop3UidlRow


class Pop3Store:
    def __init__(self, session: Session):
        self.session = session

    def numbers(self, provider_id: str, folder: str, uidls: list[str]) -> dict[str, int]:
        """{UIDL: number} for the messages now on the server, in the server's order;
        a UIDL seen for the first time gets the next number. UIDLs gone from the
        server (deleted by someone) are forgotten."""
        known = {uidl: uid for uidl, uid in self.session.execute(
            select(Pop3UidlRow.uidl, Pop3UidlRow.uid).where(Pop3UidlRow.provider_id == provider_id))}
        # Numbers are never reused, or new mail would pass for mail already queued.
        pos = self.session.get(MailboxPositionRow, (provider_id, folder))
        top = max([pos.last_uid if pos and pos.uidvalidity == UIDVALIDITY else 0, *known.values()])
        gone = set(known) - set(uidls)
        if gone:
            self.session.execute(delete(Pop3UidlRow).where(
                Pop3UidlRow.provider_id == provider_id, Pop3UidlRow.uidl.in_(gone)))
        out = {}
        for uidl in uidls:
            if uidl not in known:
                top += 1
                known[uidl] = top
                self.session.add(Pop3UidlRow(provider_id=provider_id, uidl=uidl, uid=top))
            out[uidl] = known[uidl]
        self.session.flush()
        return out
