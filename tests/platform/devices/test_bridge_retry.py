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
