"""fast.Prepared against SQLAlchemy Core, the execution it bypasses: every hot
statement, given the same rows, stores (and reads) exactly what Connection.execute
would, on every engine; the rows an UPDATE matched and errors are told alike.
(An INSERT's count is not compared: Core batches those on PostgreSQL and answers -1,
and nothing reads it.)"""
from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailgate.drivers.api import ProviderConfig
from mailgate.server.inbound import store as inbound
from mailgate.server.outbound import store as outbound
from mailgate.server.providers import store as providers
from mailgate.server.providers.state import Cause, State, Status
from mailgate.server.secrets import Sealed, SecretBox
from mailgate.server.store.db import Database
from mailgate.server.store.fast import Prepared

NOW = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)


def prepared(session: Session, statement: Prepared, rows) -> int:
    return statement.executemany(session, rows)


def core(session: Session, statement: Prepared, rows) -> int:
    return session.connection().execute(statement.statement, list(rows)).rowcount


def stored(session: Session, table: str, order: str) -> list[tuple]:
    """The rows as the database holds them (no SQLAlchemy type processing)."""
    return [tuple(r) for r in session.connection().exec_driver_sql(f"SELECT * FROM {table} ORDER BY {order}")]


@pytest.fixture
def db(mailgate_database_url):
    db = Database(mailgate_database_url)
    db.upgrade()
    yield db
    db.close()


def each_way(db: Database, work) -> dict[str, object]:
    """work(session, execute) in a transaction rolled back afterwards, once with each way
    of executing; {"Prepared" | "Core": what it returned}."""
    seen = {}
    for name, execute in (("Prepared", prepared), ("Core", core)):
        with Session(db.engine) as session:
            try:
                seen[name] = work(session, execute)
            finally:
                session.rollback()
    return seen


def outbound_rows() -> tuple[list[dict], list[dict]]:
    rows = [dict(
        id=f"00000000-0000-4000-8000-00000000000{i}", provider_id="p", request_id=request_id,
        message_id=f"<{i}@example.test>", conversation_id=f"c{i}", state="QUEUED", mail_from="a@example.test",
        to=["Jane <j@example.test>", "ñ@exämple.test"], cc=[], bcc=["b@example.test"], subject="Grüße \"x\"",
        attachments=[{"filename": "f.pdf", "content_type": "application/pdf", "size_bytes": 3}],
        raw=bytes(range(256)) + b"\r\n.\r\n", size_bytes=261, attempts=0, next_attempt_time=NOW,
        lease_until=NOW + timedelta(seconds=120), lease_token=f"t{i}", last_code=0, last_error="",
        last_transient=False, create_time=NOW, update_time=NOW, sent_time=None)
        for i, request_id in enumerate(["r-1", None])]
    refs = [dict(message_id=r["message_id"], conversation_id=r["conversation_id"], create_time=NOW,
                 references=["<root@example.test>", "<x@example.test>"]) for r in rows]
    return rows, refs


def test_the_outbox_writes_store_what_core_stores(db):
    rows, refs = outbound_rows()
    results = [dict(b_id=rows[0]["id"], b_token="t0", b_state="SENT", b_counted=1, b_next=None, b_lease=None,
                    b_code=250, b_error="", b_transient=False, b_now=NOW, b_sent=NOW),
               dict(b_id=rows[1]["id"], b_token="t1", b_state="RETRYING", b_counted=0,
                    b_next=NOW + timedelta(seconds=30), b_lease=None, b_code=451, b_error="try later ✓",
                    b_transient=True, b_now=NOW, b_sent=None),
               dict(b_id=rows[1]["id"], b_token="taken over", b_state="FAILED", b_counted=1, b_next=None,
                    b_lease=None, b_code=550, b_error="x", b_transient=False, b_now=NOW, b_sent=None)]

    def work(session, execute):
        execute(session, outbound._INSERT, rows)
        execute(session, outbound._INSERT_REF, refs)
        matched = execute(session, outbound._FINISH, results)
        return matched, stored(session, "outbound_messages", "id"), stored(session, "message_refs", "message_id")

    seen = each_way(db, work)
    assert seen["Prepared"] == seen["Core"]
    matched, messages, _ = seen["Prepared"]
    assert matched == 2  # the result under a lease taken over matched no row
    assert len(messages) == 2


def test_the_inbound_writes_store_what_core_stores(db):
    rows = [dict(id=f"00000000-0000-4000-8000-00000000000{i}", provider_id="p", campaign="support",
                 folder="INBOX", uidvalidity=7, uid=i + 1, message_id=f"<{i}@example.test>", content_hash="h",
                 conversation_id=f"c{i}", headers={"subject": "Grüße", "to": ["a@example.test"]},
                 automatic=i == 1, oversized=False, size_bytes=10, state="QUEUED", delivery_count=0, attempts=0,
                 lease_token=None, lease_consumer=None, lease_until=None, receive_time=NOW, ack_time=None)
            for i in range(3)]
    raws = [dict(id=r["id"], raw=bytes([i]) * 10) for i, r in enumerate(rows)]
    refs = [dict(message_id=r["message_id"], conversation_id=r["conversation_id"], references=[],
                 create_time=NOW) for r in rows]

    # Every column but seq, in the queue's order: seq follows the order given, but its
    # values differ between the two ways on PostgreSQL, whose sequences do not roll back.
    columns = ", ".join(c.name for c in inbound.INBOUND.c if c.name != "seq")

    def work(session, execute):
        execute(session, inbound._INSERT, rows)
        execute(session, inbound._INSERT_RAW, raws)
        execute(session, inbound._INSERT_REF, refs)
        first = session.execute(text("SELECT min(seq) FROM inbound_messages")).scalar()
        matched = execute(session, inbound._LEASE, [dict(b_seq=first, b_state="DELIVERED", b_token="k",
                                                         b_consumer="agent-1", b_until=NOW + timedelta(seconds=60),
                                                         b_attempts=1)])
        queue = [tuple(r) for r in session.connection().exec_driver_sql(
            f"SELECT {columns} FROM inbound_messages ORDER BY seq")]
        return matched, queue, stored(session, "inbound_raw", "id"), stored(session, "message_refs", "message_id")

    seen = each_way(db, work)
    assert seen["Prepared"] == seen["Core"]
    matched, queue, _, _ = seen["Prepared"]
    assert matched == 1
    assert [r[0] for r in queue] == [r["id"] for r in rows]  # in the order given


def test_the_fingerprint_query_reads_what_core_reads(db):
    box = SecretBox(os.urandom(32))
    config = ProviderConfig(id=str(uuid.uuid4()), type="smtp_imap", display_name="Desk", account="a@example.test",
                            secrets={"password": "pw", "token": "t"})
    with Session(db.engine) as session:
        providers.ProviderStore(session, box).insert(config, Status(State.GREEN, Cause.CHECKS_PASSED, "ok"))
        fast = providers._FINGERPRINT.fetchall(session, {"provider_id": config.id})
        plain = list(session.connection().execute(providers._FINGERPRINT.statement, {"provider_id": config.id}))
        session.rollback()
    # Prepared leaves out result processing: the sealed value as the driver gives it.
    assert [(v, n, bytes(x)) for v, n, x in fast] == [(v, n, x.data) for v, n, x in plain]
    assert all(isinstance(x, Sealed) for _, _, x in plain) and len(fast) == 2


def test_a_failing_statement_raises_as_core_raises(db):
    rows, _ = outbound_rows()

    def work(session, execute):
        execute(session, outbound._INSERT, rows[:1])
        with pytest.raises(IntegrityError) as info:
            execute(session, outbound._INSERT, rows[:1])  # the same primary key again
        return type(info.value.orig)

    seen = each_way(db, work)
    assert seen["Prepared"] is seen["Core"]
