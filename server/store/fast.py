"""Hot statements run on the DBAPI cursor, compiled once.

Speed: this bypasses SQLAlchemy Core's execution (Connection.execute) for the few
statements run for every message sent or received. Core costs tens of µs of Python
per statement and several per row on top of the database's own work (execution
context, parameter construction, result set-up): in the server's send path, with
a few writes per transaction, about a tenth of its CPU per message (bench/store.py
prints both ways side by side statement by statement, bench/send_path.py in the send
path of a server; tests/test_store_fast.py checks that each statement writes and
reads exactly what Core would, on every engine).
`Prepared` compiles the Core statement once per dialect and executes it on the DBAPI
cursor of the session's connection (so inside the session's transaction), converting the
parameters with SQLAlchemy's own bind processors for that dialect: the same SQL
and the same values SQLAlchemy would send, without the per-call work.

What it leaves out: result processing (rows come back as the driver gives them),
engine events and echo logging. Driver errors are raised as SQLAlchemy raises them
(IntegrityError and so on), without the parameters. Use it for plain INSERT, UPDATE
and SELECT on the hot path only; everything else goes through the ORM or Core.
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Mapping, Sequence

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement

# Parameter styles whose compiled form we read (SQLite's qmark, psycopg's pyformat);
# with any other driver the statement simply goes through SQLAlchemy.
_STYLES = ("qmark", "pyformat")

_Compiled = tuple[str, bool, list[tuple[str, Callable[[Any], Any] | None]]]


class Prepared:
    def __init__(self, statement: ClauseElement):
        self.statement = statement
        self._compiled: weakref.WeakKeyDictionary[Dialect, _Compiled | None] = weakref.WeakKeyDictionary()

    def _for(self, dialect: Dialect) -> _Compiled | None:
        try:
            return self._compiled[dialect]
        except KeyError:
            pass
        got = None
        if dialect.paramstyle in _STYLES:
            c = self.statement.compile(dialect=dialect)
            if c.positional:
                names = list(c.positiontup or ())
            else:
                names = [n for n in c.binds if f"%({n})s" in c.string]
            processors = [(n, c.binds[n].type.dialect_impl(dialect).bind_processor(dialect)) for n in names]
            got = (c.string, c.positional, processors)
        self._compiled[dialect] = got
        return got

    def _params(self, positional: bool, processors: list, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        if positional:
            return [tuple(p(row[n]) if p else row[n] for n, p in processors) for row in rows]
        return [{n: p(row[n]) if p else row[n] for n, p in processors} for row in rows]

    def executemany(self, session: Session, rows: Sequence[Mapping[str, Any]]) -> int:
        """Runs the statement once per row (each row: bind name -> value); the number
        of rows matched, all runs together."""
        if not rows:
            return 0
        conn = session.connection()
        compiled = self._for(conn.dialect)
        if compiled is None:
            return conn.execute(self.statement, list(rows)).rowcount
        sql, positional, processors = compiled
        params = self._params(positional, processors, rows)
        cursor = conn.connection.cursor()
        try:
            cursor.executemany(sql, params)
            return cursor.rowcount
        except conn.dialect.loaded_dbapi.Error as e:
            raise _wrapped(conn.dialect, sql, e) from e
        finally:
            cursor.close()

    def fetchall(self, session: Session, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Runs a SELECT; the rows as the driver returns them (no result processing),
        or, with a driver whose parameter style is not read here, as SQLAlchemy does."""
        conn = session.connection()
        compiled = self._for(conn.dialect)
        if compiled is None:
            return [tuple(row) for row in conn.execute(self.statement, dict(params))]
        sql, positional, processors = compiled
        values = self._params(positional, processors, [params])[0]
        cursor = conn.connection.cursor()
        try:
            cursor.execute(sql, values)
            return list(cursor.fetchall())
        except conn.dialect.loaded_dbapi.Error as e:
            raise _wrapped(conn.dialect, sql, e) from e
        finally:
            cursor.close()


def _wrapped(dialect: Dialect, sql: str, error: Exception) -> Exception:
    """The driver's error as SQLAlchemy would raise it (IntegrityError, OperationalError...),
    without the parameters (message bodies, addresses) in its text."""
    return DBAPIError.instance(sql, None, error, dialect.loaded_dbapi.Error, hide_parameters=True,
                               dialect=dialect)
