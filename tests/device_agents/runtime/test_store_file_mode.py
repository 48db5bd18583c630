"""The agent's store may hold a POS MAC key: its database file and the ``-wal``/``-shm``
files next to it are readable by their owner only, whatever the process umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from onecard.device_agents.runtime.store import AgentStore, open_database


@pytest.fixture
def lax_umask() -> Iterator[None]:
    """A umask that would leave new files readable by everyone."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def store_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def test_a_new_store_and_its_wal_files_are_owner_only(tmp_path: Path, lax_umask: None) -> None:
    path = tmp_path / "agent.db"

    store = AgentStore(open_database(path), "pos-1", new_epoch="aaaa0001")
    store.append_record({"device_time": 1_767_225_600_000})

    assert [mode_of(p) for p in store_files(path)] == [0o600, 0o600, 0o600]
    store.conn.close()


def test_an_existing_readable_store_is_narrowed_on_open(tmp_path: Path, lax_umask: None) -> None:
    path = tmp_path / "agent.db"
    for p in store_files(path):
        p.touch()
        p.chmod(0o644)

    open_database(path).close()

    assert mode_of(path) == 0o600
    assert all(mode_of(p) == 0o600 for p in store_files(path) if p.exists())
