"""Shared transactions of the bridge run again when the database picked them as a deadlock
victim (two workers' chunks posting to the same ledger accounts in different orders), and
only then. The real deadlocks happen in the PostgreSQL soak; these pin the rule itself."""

from __future__ import annotations

from typing import Any

import psycopg.errors
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from onecard.platform.devices.bridge import TX_ATTEMPTS, Bridge, Connection
from onecard.platform.secrets import SecretBox


@pytest.fixture
def bridge(session_factory: sessionmaker[Session]) -> Bridge:
    return Bridge(session_factory, Connection(), box=SecretBox("retry-secret-0123456789abcdef"))


def deadlock() -> OperationalError:
    return OperationalError("UPDATE ledger_balances ...", {}, psycopg.errors.DeadlockDetected())


def test_a_deadlock_victim_runs_again_and_commits(bridge: Bridge) -> None:
    runs: list[int] = []

    def work(session: Session) -> str:
        session.execute(text("SELECT 1"))
        runs.append(1)
        if len(runs) == 1:
            raise deadlock()
        return "committed"

    assert bridge.transaction(work) == "committed"
    assert len(runs) == 2
    assert bridge.counts[("bridge", "retried")] == 1


def test_other_failures_are_not_retried(bridge: Bridge) -> None:
    runs: list[int] = []

    def work(session: Session) -> Any:
        runs.append(1)
        raise IntegrityError("INSERT ...", {}, psycopg.errors.UniqueViolation())

    with pytest.raises(IntegrityError):
        bridge.transaction(work)
    assert len(runs) == 1


def test_a_transaction_that_keeps_deadlocking_gives_up(bridge: Bridge) -> None:
    runs: list[int] = []

    def work(session: Session) -> Any:
        runs.append(1)
        raise deadlock()

    with pytest.raises(OperationalError):
        bridge.transaction(work)
    assert len(runs) == TX_ATTEMPTS


@pytest.mark.postgres_only
def test_a_dead_connection_is_replaced_and_the_transaction_runs_again(database_url: str) -> None:
    """The bridge's engine does not ping before use (``make_engine(hot_path=True)``): a
    connection the server dropped is found dead by the transaction's first statement, and the
    transaction runs again on a new one."""
    from onecard.platform.db.engine import make_engine, make_session_factory

    engine = make_engine(database_url, hot_path=True, pool_size=1)
    admin = make_engine(database_url)
    try:
        bridge = Bridge(
            make_session_factory(engine),
            Connection(),
            box=SecretBox("retry-secret-0123456789abcdef"),
        )
        first = bridge.transaction(lambda s: s.scalar(text("SELECT pg_backend_pid()")))
        with admin.connect() as other:  # the server drops the bridge's connection
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            other.commit()
        second = bridge.transaction(lambda s: s.scalar(text("SELECT pg_backend_pid()")))
        assert second != first
        assert bridge.counts[("bridge", "retried")] == 1
    finally:
        engine.dispose()
        admin.dispose()
