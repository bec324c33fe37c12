"""The hot statements through fast.Prepared against SQLAlchemy Core, the execution it
bypasses (Connection.execute on the session's connection), statement by statement.

    .venv/bin/python bench/store.py [--postgresql]

In one transaction rolled back at the end (SQLite; --postgresql: a throw-away schema
on the local PostgreSQL): the outbox's writes (insert, its reference, the result) for
batches of 1 and 4 messages, the inbound queue's insert of a batch of 10, the provider
fingerprint query. The median CPU time per batch of each way, side by side, with the
ratio Core / Prepared. bench/send_path.py measures both ways in the send path of a
server.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import ContextManager, Iterator

from sqlalchemy.orm import Session

from mailgate.server.inbound import store as inbound_store
from mailgate.server.outbound import store as outbound_store
from mailgate.server.providers import store as provider_store
from mailgate.server.store.db import Database
from mailgate.server.store.fast import Prepared
from mailgate.testing.harness import database_urls

USER = "bench@example.test"
RAW = b"x" * 10_600


def core_executemany(self: Prepared, session: Session, rows) -> int:
    """Prepared.executemany the plain way: the statement through Connection.execute."""
    return session.connection().execute(self.statement, list(rows)).rowcount if rows else 0


def core_fetchall(self: Prepared, session: Session, params) -> list:
    return list(session.connection().execute(self.statement, dict(params)))


@contextmanager
def plain_core() -> Iterator[None]:
    """Every Prepared statement executed by SQLAlchemy Core for the duration."""
    saved = Prepared.executemany, Prepared.fetchall
    Prepared.executemany, Prepared.fetchall = core_executemany, core_fetchall
    try:
        yield
    finally:
        Prepared.executemany, Prepared.fetchall = saved


def database_url(postgresql: bool, directory: Path) -> ContextManager[str]:
    """A fresh database: SQLite in `directory`, or a throw-away PostgreSQL schema."""
    return contextmanager(database_urls)(directory, "postgresql" if postgresql else "sqlite")


# --- 1. statements alone ---------------------------------------------------------------

def outbox_batch(n: int) -> tuple[list, list, list]:
    now = datetime.now(timezone.utc)
    rows, refs, results = [], [], []
    for _ in range(n):
        v = dict(id=str(uuid.uuid4()), provider_id="p", request_id=None, message_id=f"<{uuid.uuid4()}@e.test>",
                 conversation_id=str(uuid.uuid4()), state="QUEUED", mail_from=USER, to=["j@example.test"], cc=[],
                 bcc=[], subject="s", attachments=[], raw=RAW, size_bytes=len(RAW), attempts=0,
                 next_attempt_time=now, lease_until=now + timedelta(seconds=120), lease_token=str(uuid.uuid4()),
                 last_code=0, last_error="", last_transient=False, create_time=now, update_time=now, sent_time=None)
        rows.append(v)
        refs.append(dict(message_id=v["message_id"], conversation_id=v["conversation_id"], references=[],
                         create_time=now))
        results.append(dict(b_id=v["id"], b_token=v["lease_token"], b_state="SENT", b_counted=1, b_next=None,
                            b_lease=None, b_code=250, b_error="", b_transient=False, b_now=now, b_sent=now))
    return rows, refs, results


def inbound_batch(n: int) -> tuple[list, list]:
    now = datetime.now(timezone.utc)
    uidvalidity = uuid.uuid4().int >> 100  # a mailbox of its own for every batch
    rows = [dict(id=str(uuid.uuid4()), provider_id="p", campaign="c", folder="INBOX", uidvalidity=uidvalidity,
                 uid=i + 1,
                 message_id=f"<{uuid.uuid4()}@e.test>", content_hash="h", conversation_id=str(uuid.uuid4()),
                 headers={"subject": "s"}, automatic=False, oversized=False, size_bytes=len(RAW), state="QUEUED",
                 delivery_count=0, lease_token=None, lease_consumer=None, lease_until=None, receive_time=now,
                 ack_time=None) for i in range(n)]
    return rows, [dict(id=r["id"], raw=RAW) for r in rows]


def outbox_writes(n: int):
    def run(session: Session, data) -> None:
        rows, refs, results = data
        outbound_store._INSERT.executemany(session, rows)
        outbound_store._INSERT_REF.executemany(session, refs)
        outbound_store._FINISH.executemany(session, results)
    return f"outbox: insert, reference, result of {n}", lambda: outbox_batch(n), run


def inbound_insert(n: int):
    def run(session: Session, data) -> None:
        rows, raws = data
        inbound_store._INSERT.executemany(session, rows)
        inbound_store._INSERT_RAW.executemany(session, raws)
    return f"inbound: insert of {n}", lambda: inbound_batch(n), run


def fingerprint():
    def run(session: Session, _) -> None:
        provider_store._FINGERPRINT.fetchall(session, {"provider_id": "p"})
    return "provider fingerprint query", lambda: None, run


def per_batch(db: Database, make, run, reps: int = 200) -> float:
    """CPU seconds per call of run, over `reps` batches made beforehand, rolled back."""
    batches = [make() for _ in range(reps)]
    with Session(db.engine) as session:
        session.connection()
        t = time.process_time()
        for data in batches:
            run(session, data)
        spent = time.process_time() - t
        session.rollback()
    return spent / reps


def statements(url: str) -> None:
    db = Database(url)
    db.upgrade()
    print(f"statements alone ({db.engine.dialect.name}), CPU per batch:")
    print(f"   {'':42} {'Prepared':>9} {'Core':>9} {'Core / Prepared':>16}")
    try:
        for name, make, run in (outbox_writes(1), outbox_writes(4), inbound_insert(10), fingerprint()):
            fast, plain = [], []
            for _ in range(7):
                fast.append(per_batch(db, make, run))
                with plain_core():
                    plain.append(per_batch(db, make, run))
            f, p = statistics.median(fast), statistics.median(plain)
            print(f"   {name:42} {f * 1e6:6.0f} µs {p * 1e6:6.0f} µs {p / f:15.2f}")
    finally:
        db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--postgresql", action="store_true", help="a throw-away schema on the local PostgreSQL")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, database_url(args.postgresql, Path(d)) as url:
        statements(url)


if __name__ == "__main__":
    main()
