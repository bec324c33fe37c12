"""Wake-ups across replicas: NOTIFY inside the committing transaction, LISTEN on
another connection, against the machine's PostgreSQL."""
from __future__ import annotations

import queue

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from mailgate.server.wakeups import Listener, notify
from mailgate.testing.harness import POSTGRES_URL


@pytest.fixture
def engine():
    engine = create_engine(POSTGRES_URL)
    yield engine
    engine.dispose()


def test_a_committed_notification_reaches_a_listener_and_a_rolled_back_one_does_not(engine):
    heard: queue.Queue = queue.Queue()
    listener = Listener(engine, heard.put)
    listener.start()
    try:
        with Session(engine) as s:
            notify(s, ["campaign:rolled back"])
            s.rollback()
        with Session(engine) as s, s.begin():
            notify(s, ["campaign:support", "provider:p-1"])
        assert heard.get(timeout=5) == ["campaign:support", "provider:p-1"]
        assert heard.empty()
    finally:
        listener.close()


def test_notify_is_a_no_op_on_sqlite(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with Session(engine) as s, s.begin():
        notify(s, ["campaign:support"])  # one process: nobody else to tell
    engine.dispose()
