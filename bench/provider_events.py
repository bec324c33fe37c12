"""What a provider's history costs: writing an event when the provider's events of
that type are at the cap (each insert then drops the oldest) against writing one
into an empty history, and a mailbox reconnecting in a tight loop (coalesced).

    .venv/bin/python bench/provider_events.py [--events 500] [--postgresql]

In one run, on a fresh database (SQLite; --postgresql: a throw-away schema on the
local PostgreSQL) holding one provider: --events events written one transaction
each (as History writes them), first into an empty history, then with CAP (1000)
events of the type already stored; the median ms per event of each, side by side,
with the ratio at-cap / empty (expected <= 2: the trim walks one index). Then
--events * 100 reconnects recorded through History.record in one window: the µs per
reconnect and the rows written (expected: 1).
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from mailgate.drivers.api import ProviderConfig
from mailgate.server.paging import PageTokens
from mailgate.server.providers import reasons
from mailgate.server.providers.history import CAP, Event, EventType, History, HistoryStore
from mailgate.server.providers.store import ProviderStore
from mailgate.server.secrets import SecretBox, new_key
from mailgate.server.store.db import Database
from mailgate.server.store.models import ProviderEventRow
from mailgate.testing.harness import database_urls


def timed_writes(db: Database, pid: str, n: int) -> list[float]:
    times = []
    for i in range(n):
        event = Event(pid, EventType.AUTHORIZATION_STARTED, f"sign-in {i}", time=datetime.now(timezone.utc))
        start = time.perf_counter()
        db.transaction(lambda s: HistoryStore(s).add([event]))
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=500)
    ap.add_argument("--postgresql", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, \
            contextmanager(database_urls)(Path(tmp), "postgresql" if args.postgresql else "sqlite") as url:
        db = Database(url)
        db.upgrade()
        box = SecretBox([new_key()])
        pid = str(uuid.uuid4())
        config = ProviderConfig(id=pid, type="echo", display_name="Bench", account="bench@example.test")
        db.transaction(lambda s: ProviderStore(s, box).insert(config, reasons.checked("bench")))

        empty = timed_writes(db, pid, args.events)
        db.transaction(lambda s: HistoryStore(s).add([
            Event(pid, EventType.AUTHORIZATION_STARTED, "filler", time=datetime.now(timezone.utc))
            for _ in range(CAP)]))
        at_cap = timed_writes(db, pid, args.events)
        kept = db.transaction(lambda s: s.query(ProviderEventRow).filter_by(
            provider_id=pid, type=EventType.AUTHORIZATION_STARTED.value).count())

        history = History(db, PageTokens(b"k" * 32), timedelta(days=30))
        reconnects = args.events * 100
        before = db.transaction(lambda s: s.query(ProviderEventRow).count())

        async def flapping() -> float:
            start = time.perf_counter()
            for i in range(reconnects):
                await history.record(Event(pid, EventType.RECONNECT, f"dropped {i}", error_code="PROTOCOL_ERROR"))
            return time.perf_counter() - start
        spent = asyncio.run(flapping())
        written = db.transaction(lambda s: s.query(ProviderEventRow).count()) - before
        db.close()

    e, c = statistics.median(empty) * 1e3, statistics.median(at_cap) * 1e3
    print(f"{'engine':12} {'empty ms':>9} {'at cap ms':>10} {'ratio':>6}")
    print(f"{'postgresql' if args.postgresql else 'sqlite':12} {e:9.3f} {c:10.3f} {c / e:6.2f}")
    print(f"kept at the cap: {kept} (CAP {CAP})")
    print(f"{reconnects} reconnects in one window: {spent / reconnects * 1e6:.1f} µs each, {written} row(s) written")


if __name__ == "__main__":
    main()
