"""Where the store's transactions run: on SQLite one at a time, on the event loop
when nothing else holds the database; on PostgreSQL always off the loop."""
from __future__ import annotations

import asyncio
import sqlite3
import threading

import sqlalchemy as sa

from mailgate.server.store.db import Database


def _ident(_session) -> int:
    return threading.get_ident()


def test_a_transaction_asked_for_on_the_loop_runs_where_the_engine_wants_it(mailgate_database_url):
    db = Database(mailgate_database_url)
    try:
        async def main() -> tuple[int, int]:
            return threading.get_ident(), await db.run(_ident)

        loop_thread, ran_on = asyncio.run(main())
        if db.is_sqlite:  # a local file: no hop to a thread and back
            assert ran_on == loop_thread
        else:  # each statement waits on the network: never on the loop
            assert ran_on != loop_thread
    finally:
        db.close()


def test_on_sqlite_a_loop_transaction_waits_off_the_loop_for_one_under_way(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.transaction(lambda s: s.execute(sa.text("CREATE TABLE t (n INTEGER)")))
    holding, release = threading.Event(), threading.Event()

    def watcher_write(session) -> None:  # a mailbox watcher's transaction, from its own thread
        session.execute(sa.text("INSERT INTO t VALUES (1)"))
        holding.set()
        release.wait(10)

    try:
        watcher = threading.Thread(target=db.run_sync, args=(watcher_write,))
        watcher.start()
        assert holding.wait(10)

        async def main() -> tuple[int, list[int], int]:
            ticks = 0

            async def ticker() -> None:  # the loop goes on while the loop's transaction waits
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.01)

            ticking = asyncio.ensure_future(ticker())
            reading = asyncio.ensure_future(db.run(lambda s: (threading.get_ident(), list(
                s.scalars(sa.text("SELECT n FROM t"))))))
            await asyncio.sleep(0.2)
            assert not reading.done()  # serialized behind the watcher's transaction
            release.set()
            ran_on, seen = await reading
            ticking.cancel()
            return ticks, seen, ran_on

        ticks, seen, ran_on = asyncio.run(main())
        watcher.join(10)
        assert ticks >= 5
        assert seen == [1]  # ran after the watcher's commit
        assert ran_on != threading.get_ident()  # in the database thread, not on the loop
    finally:
        release.set()
        db.close()


def test_on_sqlite_a_heavy_transaction_runs_off_the_loop(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        async def main() -> tuple[int, int, int]:
            return (threading.get_ident(), await db.run(_ident, heavy=True), await db.run(_ident))

        loop_thread, heavy_on, light_on = asyncio.run(main())
        assert heavy_on != loop_thread  # message bytes are never read or written on the loop
        assert light_on == loop_thread
    finally:
        db.close()


def test_on_sqlite_a_loop_transaction_never_waits_on_the_loop_for_another_process(tmp_path):
    """Another process (here a plain sqlite3 connection) holds the file's write lock:
    the loop's transaction is rolled back at once and waits in the database thread."""
    path = tmp_path / "db.sqlite"
    db = Database(f"sqlite:///{path}")
    db.transaction(lambda s: s.execute(sa.text("CREATE TABLE t (n INTEGER)")))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the write lock, as a CLI or a second server would hold it
    other.execute("INSERT INTO t VALUES (1)")
    calls = []

    def write(session) -> int:
        calls.append(threading.get_ident())
        session.execute(sa.text("INSERT INTO t VALUES (2)"))
        return threading.get_ident()

    try:
        async def main() -> tuple[int, int, int]:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.01)

            ticking = asyncio.ensure_future(ticker())
            writing = asyncio.ensure_future(db.run(write))
            await asyncio.sleep(0.3)
            assert not writing.done()  # waiting for the lock...
            other.execute("COMMIT")
            ran_on = await writing
            ticking.cancel()
            return threading.get_ident(), ran_on, ticks

        loop_thread, ran_on, ticks = asyncio.run(main())
        assert ticks >= 10  # ...but not on the loop, which went on
        assert calls[0] == loop_thread and ran_on != loop_thread  # tried on the loop, done in the thread
        assert db.transaction(lambda s: sorted(s.scalars(sa.text("SELECT n FROM t")))) == [1, 2]
    finally:
        other.close()
        db.close()
