"""Wake-ups across replicas. Several mailgate processes may share one PostgreSQL:
the queue's state is in the store already, but a consumer waiting on one replica
must also hear of mail committed by another at once, not at its next sweep.

A commit to a campaign queue NOTIFYs `mailgate_inbound` with its topics inside the
same transaction (PostgreSQL sends it on commit, never for a rollback); every
replica LISTENs on a connection of its own and wakes its waiting consumers. On
SQLite there is one process, and nothing to do.
"""
from __future__ import annotations

import json
import logging
import threading
from typing import Callable

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

log = logging.getLogger("mailgate.wakeups")

CHANNEL = "mailgate_inbound"


# PostgreSQL refuses a payload of 8000 bytes or more: more topics go in several.
MAX_PAYLOAD = 7000


def notify(session: Session, topics: list[str]) -> None:
    """Within the caller's transaction: tell every replica these topics have news."""
    if session.get_bind().dialect.name != "postgresql":
        return
    batch: list[str] = []
    size = 2
    for topic in topics:
        cost = len(json.dumps(topic).encode()) + 1
        if batch and size + cost > MAX_PAYLOAD:
            _send(session, batch)
            batch, size = [], 2
        batch.append(topic)
        size += cost
    if batch:
        _send(session, batch)


def _send(session: Session, topics: list[str]) -> None:
    session.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": json.dumps(topics)})


class Listener:
    """LISTENs on CHANNEL in a thread; calls `on_topics(topics)` for each notification.
    Reconnects with backoff when the connection drops."""

    def __init__(self, engine: Engine, on_topics: Callable[[list[str]], None], *, backoff_cap: float = 30.0):
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_topics, self._cap = on_topics, backoff_cap
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mailgate-wakeups", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        """Returns once LISTEN is in place (or after `timeout`; the thread keeps trying)."""
        self._thread.start()
        self._ready.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._ready.set()
                    delay = 0.5
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._deliver(note.payload)
            except psycopg.Error as e:
                if self._stop.is_set():
                    return
                log.warning("wake-ups from other replicas paused (%s); reconnecting in %.1f s", e, delay)
                self._stop.wait(delay)
                delay = min(self._cap, delay * 2)

    def _deliver(self, payload: str) -> None:
        try:
            topics = json.loads(payload)
        except ValueError:
            log.warning("ignored a malformed wake-up: %r", payload[:200])
            return
        self._on_topics([t for t in topics if isinstance(t, str)])
