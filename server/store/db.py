"""Engine set-up and the one way to run a transaction.

On PostgreSQL, transactions run off the event loop in a small executor (each
waits on the network). On SQLite every transaction of this process is serialized
by one lock, so the process never fights itself for SQLite's single write lock;
WAL and a busy timeout cover other processes (the CLI, a second server) touching
the file.

A short SQLite transaction asked for on the event loop runs right there when the
lock is free: SQLite is a local file, a transaction takes a fraction of a
millisecond, and its Python holds the GIL anyway, so a hop to a thread and back
only added two thread switches and the fight for the GIL (~5 % of the CPU of
sending a message). It must never block the loop, so on the loop:

* it runs on a connection with no busy timeout: if another process holds the
  file's write lock, it is rolled back at once and run again in the executor,
  which waits for the lock;
* when this process's lock is taken (a mailbox watcher's transaction), it waits
  in the executor's one thread;
* a `heavy` transaction (one that reads or writes message bytes) always runs in
  the executor.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, Callable, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("mailgate.store")

T = TypeVar("T")


def normalize_url(url: str) -> URL:
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")  # psycopg 3, not psycopg2
    return u


BUSY_TIMEOUT = 30.0  # seconds a SQLite transaction waits for another process's write lock


def make_engine(url: str, *, busy_timeout: float = BUSY_TIMEOUT) -> Engine:
    """hide_parameters: an error never quotes the statement's values (message bytes,
    sealed secrets) into a log line."""
    u = normalize_url(url)
    if u.get_backend_name() == "sqlite":
        private_sqlite_file(u)
        engine = create_engine(u, hide_parameters=True,
                               connect_args={"timeout": busy_timeout, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cur.close()
        return engine
    return create_engine(u, hide_parameters=True, pool_pre_ping=True, pool_size=8, max_overflow=4)


_reported: set[str] = set()


def private_sqlite_file(u: URL) -> None:
    """Creates a SQLite database file with mode 0600 (whatever the umask) before
    SQLite opens it: SQLite would create it 0644 less the umask, and it gives the
    -wal, -shm and -journal files it makes beside it the database file's mode. An
    existing file that others may read is reported, as the key file is."""
    path = u.database or ""
    if path in ("", ":memory:") or path.startswith("file:") or u.query.get("mode") == "memory":
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    except OSError:  # no such directory, no permission: SQLite says so when it opens it
        return
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077 and path not in _reported:
        _reported.add(path)
        log.warning("database file %s is readable by others (mode %o): chmod 600 it (and its -wal "
                    "and -shm files)", path, mode)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("mailgate.server.store") / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Brings the schema to the newest migration (run at every start)."""
    command.upgrade(alembic_config(engine), "head")


class Database:
    def __init__(self, url: str):
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._executor = ThreadPoolExecutor(
            max_workers=1 if self.is_sqlite else 8, thread_name_prefix="mailgate-db")
        self._serial = threading.Lock() if self.is_sqlite else None
        # The event loop's own connection: it never waits for another process's lock.
        self._loop_engine = make_engine(url, busy_timeout=0) if self.is_sqlite else None
        self._loop_sessions = sessionmaker(self._loop_engine, expire_on_commit=False) if self._loop_engine else None

    def upgrade(self) -> None:
        upgrade(self.engine)

    def transaction(self, fn: Callable[[Session], T]) -> T:
        """Runs fn in one short transaction: committed if it returns, rolled back if it raises."""
        with self._sessions.begin() as session:
            return fn(session)

    def _on_loop(self, fn: Callable[[Session], T]) -> T | _Busy:
        assert self._loop_sessions is not None
        try:
            with self._loop_sessions.begin() as session:
                return fn(session)
        except OperationalError as e:
            if getattr(e.orig, "sqlite_errorcode", None) in _BUSY_CODES:
                return BUSY  # rolled back: another process holds the file
            raise

    def _serialized(self, fn: Callable[[Session], T]) -> T:
        if self._serial is None:
            return self.transaction(fn)
        with self._serial:
            return self.transaction(fn)

    def run_sync(self, fn: Callable[[Session], T]) -> T:
        """`transaction` from a thread that is not the event loop's (the mailbox
        watchers), on the database thread: SQLite still sees one writer."""
        return self._executor.submit(self._serialized, fn).result()

    async def run(self, fn: Callable[[Session], T], *, heavy: bool = False) -> T:
        """`transaction` from the event loop: on SQLite right here if no other
        transaction is under way and the file is free, else (and on PostgreSQL,
        and for `heavy` transactions: those that read or write message bytes) in
        the executor. `fn` may be run twice: it must only touch the session."""
        if not heavy and self._serial is not None and self._serial.acquire(blocking=False):
            try:
                done = self._on_loop(fn)
            finally:
                self._serial.release()
            if done is not BUSY:
                return done  # type: ignore[return-value]
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._serialized, fn)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.engine.dispose()
        if self._loop_engine is not None:
            self._loop_engine.dispose()


class _Busy:
    def __repr__(self) -> str:
        return "BUSY"


BUSY = _Busy()
_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
