"""Engines and sessions for SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode and starts every transaction with ``BEGIN IMMEDIATE``: SQLite allows one
writer at a time anyway, and taking the write lock up front means a read-then-write transaction
never fails half-way with ``SQLITE_BUSY_SNAPSHOT``. PostgreSQL takes row locks instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(
    url: str, *, echo: bool = False, pool_size: int = 10, hot_path: bool = False
) -> Engine:
    """Create an engine for ``url`` with the platform's connection settings.

    ``hot_path`` is the device bridge's profile on PostgreSQL: no ping before each checkout
    (a network round trip per transaction; the bridge runs a transaction again when its
    connection turns out dead, see ``Bridge.transaction``) and server-side prepared
    statements (its statements are equality lookups and inserts, planned once per
    connection). Elsewhere a checkout pings, and nothing is prepared: a pinned generic plan
    would ignore the LIKE-prefix indexes of the search pages.
    """
    if url.startswith("sqlite"):
        return _sqlite_engine(url, echo)
    return create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=not hot_path,
        connect_args={"prepare_threshold": 5 if hot_path else None},
    )


def _sqlite_engine(url: str, echo: bool) -> Engine:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the driver, decide when a transaction begins (see module docstring).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return the session factory; objects stay readable after commit (no expire)."""
    return sessionmaker(engine, expire_on_commit=False, autoflush=True)


def is_postgres(session_or_engine: Session | Engine) -> bool:
    """True when the bound database is PostgreSQL (row locks, triggers)."""
    bind = (
        session_or_engine.get_bind()
        if isinstance(session_or_engine, Session)
        else session_or_engine
    )
    return bind.dialect.name == "postgresql"
