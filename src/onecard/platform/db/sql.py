"""Statement pieces that differ by database for speed, not meaning."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    Connection,
    Dialect,
    Executable,
    any_,
    bindparam,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError

DIALECTS = ("postgresql", "sqlite")


def in_values(column: Any, name: str, dialect: str) -> ColumnElement[bool]:
    """``column IN`` the list bound as ``name``, for a statement built once per ``dialect``.

    On PostgreSQL it is ``column = ANY(:name)`` with one array parameter: the statement's text
    is the same whatever the list's length, so the driver converts it once and the server
    reuses its prepared plan (an expanding ``IN`` is new text for every length, parsed again
    by both). Elsewhere, an expanding ``IN``.
    """
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))  # type: ignore[no-any-return]
    return column.in_(bindparam(name, expanding=True))  # type: ignore[no-any-return]


# -- one network round trip for several statements (PostgreSQL) --------------------------------
#
# On PostgreSQL every statement of a transaction waits for its answer before the next is sent,
# and so do the BEGIN psycopg sends before the first and the COMMIT after the last; on this
# project's machines (nested virtual machines, where waking a process can cost a tenth of a
# millisecond or more) each wait costs both sides CPU as well as time. psycopg's pipeline mode
# sends several statements at once and reads their answers after one Sync (a chunk of two or
# three taps: a fifth to a third less time, docs/devices.md). SQLAlchemy cannot read rows in
# that mode (it asks for a result's columns before the Sync), so the reads below run on the
# driver's connection, inside the transaction SQLAlchemy holds; their errors are turned into
# SQLAlchemy's, as its own statements' would be (a dead connection is invalidated, so the pool
# drops it).

# The compiled statements, by the statement's id; each entry holds the statement itself, so the
# id cannot be reused by another object while the entry exists.
_COMPILED: dict[tuple[int, str], tuple[ClauseElement, str, dict[str, Any]]] = {}


def _compiled(stmt: ClauseElement, dialect: Dialect) -> tuple[str, dict[str, Any]]:
    """The driver's SQL text of ``stmt`` and the values of its literal parameters, compiled
    once per process and dialect (meant for statements built once: a module's constants)."""
    key = (id(stmt), dialect.name)
    hit = _COMPILED.get(key)
    if hit is None:
        compiled = stmt.compile(dialect=dialect)
        hit = _COMPILED[key] = (stmt, str(compiled), dict(compiled.params))
    return hit[1], hit[2]


def read_together(conn: Connection, reads: Sequence[tuple[Any, dict[str, Any]]]) -> list[list[Any]]:
    """The rows of each ``(statement, parameters)`` read, in order.

    On PostgreSQL all of them (and the transaction's BEGIN, when they are its first
    statements) reach the server together and are answered in one round trip; their columns
    come back as the driver gives them, so they must be types that SQLAlchemy does not
    convert on PostgreSQL (numbers, strings, booleans, JSON, aware timestamps). Elsewhere they
    run one after the other through ``conn``."""
    if conn.dialect.name != "postgresql":
        return [list(conn.execute(stmt, params)) for stmt, params in reads]
    raw: Any = conn.connection.driver_connection
    texts = [_compiled(stmt, conn.dialect) for stmt, _p in reads]
    cursors = []
    with _as_sqlalchemy_error(conn, texts[0][0] if texts else ""):
        with raw.pipeline():
            for (sql, defaults), (_stmt, params) in zip(texts, reads, strict=True):
                cursor = raw.cursor()
                cursor.execute(sql, {**defaults, **params})
                cursors.append(cursor)
        return [cursor.fetchall() for cursor in cursors]


def write_last(conn: Connection, stmt: Executable, rows: list[dict[str, Any]]) -> None:
    """Run ``stmt`` for each of ``rows`` as the last statement of the transaction ``conn``
    holds; the caller commits next, and runs nothing else before.

    On PostgreSQL the rows and the COMMIT go to the server together, in one round trip: the
    caller's commit (SQLAlchemy's side of it) then finds the driver's transaction over and
    costs nothing. A failed row (a unique key taken meanwhile) raises SQLAlchemy's error here,
    and nothing of the transaction is committed; the caller rolls back as after any error."""
    if conn.dialect.name != "postgresql":
        if rows:
            conn.execute(stmt, rows)
        return
    raw: Any = conn.connection.driver_connection
    with _as_sqlalchemy_error(conn, "COMMIT"), raw.pipeline():
        if rows:
            conn.execute(stmt, rows)  # psycopg's executemany rides the open pipeline
        raw.execute("COMMIT")


@contextlib.contextmanager
def _as_sqlalchemy_error(conn: Connection, statement: str) -> Iterator[None]:
    """Raise a driver error as SQLAlchemy's ``DBAPIError`` subclass, invalidating ``conn``
    when the error says the connection is gone (as SQLAlchemy does for its statements)."""
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield
    except DBAPIError:
        raise
    except dbapi.Error as err:
        dead = conn.dialect.is_disconnect(err, conn.connection.dbapi_connection, None)
        if dead:
            conn.invalidate(err)
        raise DBAPIError.instance(
            statement, None, err, dbapi.Error, connection_invalidated=dead, dialect=conn.dialect
        ) from err
