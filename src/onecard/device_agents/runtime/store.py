"""The agent's durable local store (SQLite, WAL): records waiting for an ack, lists, command
receipts and a little state. One file may hold many devices (the simulator) — every row carries
the device id.

Crash safety: a record's seq is allocated and the record stored in one transaction, so a crash
at any point leaves either both or neither. ``synchronous=FULL`` by default (survives a power
cut); the simulator, whose "power cuts" are simulated, may pass ``NORMAL``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from onecard.device_agents.protocol.acks import covered_ranges
from onecard.device_agents.protocol.messages import Ack, Record

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    device TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (device, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS record (
    device TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (device, epoch, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS list_version (
    device TEXT NOT NULL, list TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (device, list)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS list_entry (
    device TEXT NOT NULL, list TEXT NOT NULL, key INTEGER NOT NULL,
    PRIMARY KEY (device, list, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS command (
    device TEXT NOT NULL, cmd_id TEXT NOT NULL, receipt TEXT NOT NULL,
    PRIMARY KEY (device, cmd_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spend (
    device TEXT NOT NULL, key INTEGER NOT NULL, day INTEGER NOT NULL, amount INTEGER NOT NULL,
    PRIMARY KEY (device, key, day)) WITHOUT ROWID;
"""
TABLES = ("meta", "record", "list_version", "list_entry", "command", "spend")
FILE_MODE = 0o600  # owner only: the store may hold a POS MAC key


def open_database(path: Path | str, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection in WAL mode with the agent schema; shared by the stores of one process.

    The file may hold a POS MAC key, so it is readable by its owner only: it is created with
    mode 0600 (an existing file and its ``-wal``/``-shm`` are narrowed to it), and SQLite
    creates the ``-wal`` and ``-shm`` files with the database file's mode.
    """
    _private_file(Path(path))
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'NORMAL' if synchronous == 'NORMAL' else 'FULL'}")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.executescript(SCHEMA)
    return conn


def _private_file(path: Path) -> None:
    """Make ``path`` exist with mode :data:`FILE_MODE` whatever the process umask, and narrow
    the ``-wal``/``-shm`` files an earlier, laxer open may have left (new ones follow it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    for sibling in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if sibling.exists():
            sibling.chmod(FILE_MODE)


class AgentStore:
    """One device's rows in an agent database. Not thread-safe on its own: the runtime calls
    it from its network thread; a lock shared per connection guards transactions."""

    _locks: ClassVar[dict[int, threading.RLock]] = {}

    def __init__(self, conn: sqlite3.Connection, device: str, *, new_epoch: str) -> None:
        """Open ``device``'s store; ``new_epoch`` becomes its epoch if it has none yet (a new
        or wiped store)."""
        self.conn = conn
        self.device = device
        self._lock = self._locks.setdefault(id(conn), threading.RLock())
        with self.transaction():
            if self._meta("epoch") is None:
                self._set_meta("epoch", new_epoch)
                self._set_meta("max_seq", "0")
        self.epoch: str = self._meta("epoch") or new_epoch

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on an exception)."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute(
            "SELECT value FROM meta WHERE device=? AND key=?", (self.device, key)
        ).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta (device, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (device, key) DO UPDATE SET value = excluded.value",
            (self.device, key, value),
        )

    def get(self, key: str, default: str = "") -> str:
        """A small persistent setting (clock epoch, last time sync …)."""
        with self._lock:
            value = self._meta(key)
        return default if value is None else value

    def put(self, key: str, value: str) -> None:
        """Store a small setting durably."""
        with self.transaction():
            self._set_meta(key, value)

    # records ------------------------------------------------------------------------------

    def append_record(
        self,
        fields: dict[str, Any],
        *,
        spend_key: int | None = None,
        seal: Callable[[int], Mapping[str, Any]] | None = None,
        state: Mapping[str, str] | None = None,
    ) -> Record:
        """Allocate the next seq and store the record in one transaction; return it.

        ``spend_key`` with an ``amount`` adds to that credential's offline spend of the day
        (``day`` in ``fields['extra']`` is not used; the day is ``device_time // 86_400_000``).
        ``seal(seq)`` returns fields that depend on the seq (a MAC covering it); ``state`` holds
        small settings stored with the record, so a crash keeps both or neither (a POS's
        counters).
        """
        with self.transaction() as conn:
            seq = int(self._meta("max_seq") or "0") + 1
            if seal is not None:
                fields = {**fields, **seal(seq)}
            record = Record(epoch=self.epoch, seq=seq, **fields)
            conn.execute(
                "INSERT INTO record (device, epoch, seq, body) VALUES (?, ?, ?, ?)",
                (self.device, self.epoch, seq, record.model_dump_json(exclude_none=True)),
            )
            self._set_meta("max_seq", str(seq))
            for key, value in (state or {}).items():
                self._set_meta(key, value)
            if spend_key is not None and record.amount:
                conn.execute(
                    "INSERT INTO spend (device, key, day, amount) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (device, key, day) "
                    "DO UPDATE SET amount = amount + excluded.amount",
                    (self.device, spend_key, record.device_time // 86_400_000, record.amount),
                )
        return record

    @property
    def max_seq(self) -> int:
        """Highest seq allocated in this epoch (0: none)."""
        return int(self.get("max_seq", "0"))

    def records(self, *, after: int = 0, limit: int = 100) -> list[Record]:
        """Stored records of the current epoch with seq > ``after``, in seq order."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT body FROM record WHERE device=? AND epoch=? AND seq>? ORDER BY seq LIMIT ?",
                (self.device, self.epoch, after, limit),
            ).fetchall()
        return [Record.model_validate_json(r[0]) for r in rows]

    def records_in(self, ranges: Iterable[tuple[int, int]]) -> list[Record]:
        """Stored records of the current epoch inside the given inclusive ranges."""
        out: list[Record] = []
        with self._lock:
            for first, last in ranges:
                rows = self.conn.execute(
                    "SELECT body FROM record WHERE device=? AND epoch=? AND seq BETWEEN ? AND ? "
                    "ORDER BY seq",
                    (self.device, self.epoch, first, last),
                ).fetchall()
                out.extend(Record.model_validate_json(r[0]) for r in rows)
        return out

    def delete_covered(self, ack: Ack) -> int:
        """Delete the current epoch's records ``ack`` covers; how many were deleted."""
        if ack.epoch != self.epoch:
            return 0
        deleted = 0
        with self.transaction() as conn:
            for first, last in covered_ranges(ack):
                cur = conn.execute(
                    "DELETE FROM record WHERE device=? AND epoch=? AND seq BETWEEN ? AND ?",
                    (self.device, self.epoch, first, last),
                )
                deleted += cur.rowcount
        return deleted

    def unsent_count(self) -> int:
        """Records stored and not yet covered by an ack."""
        with self._lock:
            row = self.conn.execute(
                "SELECT count(*) FROM record WHERE device=?", (self.device,)
            ).fetchone()
        return int(row[0])

    def storage_used(self) -> int:
        """Bytes of record bodies held (an estimate of the store's use for heartbeats)."""
        with self._lock:
            row = self.conn.execute(
                "SELECT coalesce(sum(length(body)), 0) FROM record WHERE device=?", (self.device,)
            ).fetchone()
        return int(row[0])

    def spent(self, key: int, day: int) -> int:
        """Offline amount (fen) spent with credential ``key`` on device-day ``day``."""
        with self._lock:
            row = self.conn.execute(
                "SELECT amount FROM spend WHERE device=? AND key=? AND day=?",
                (self.device, key, day),
            ).fetchone()
        return 0 if row is None else int(row[0])

    # lists --------------------------------------------------------------------------------

    def list_versions(self) -> dict[str, int]:
        """Version held of every list."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT list, version FROM list_version WHERE device=?", (self.device,)
            ).fetchall()
        return {str(name): int(version) for name, version in rows}

    def list_keys(self, name: str) -> list[int]:
        """All keys of a list, sorted."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT key FROM list_entry WHERE device=? AND list=? ORDER BY key",
                (self.device, name),
            ).fetchall()
        return [int(r[0]) for r in rows]

    def apply_delta(
        self,
        name: str,
        to: int,
        add: Iterable[int],
        remove: Iterable[int],
        *,
        replace: bool = False,
    ) -> None:
        """Apply a delta (or, with ``replace``, a whole snapshot) and set the version — one
        transaction, so a crash leaves the old version or the new one."""
        with self.transaction() as conn:
            if replace:
                conn.execute(
                    "DELETE FROM list_entry WHERE device=? AND list=?", (self.device, name)
                )
            conn.executemany(
                "DELETE FROM list_entry WHERE device=? AND list=? AND key=?",
                [(self.device, name, k) for k in remove],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO list_entry (device, list, key) VALUES (?, ?, ?)",
                [(self.device, name, k) for k in add],
            )
            conn.execute(
                "INSERT INTO list_version (device, list, version) VALUES (?, ?, ?) "
                "ON CONFLICT (device, list) DO UPDATE SET version = excluded.version",
                (self.device, name, to),
            )

    # commands -----------------------------------------------------------------------------

    def command_receipt(self, cmd_id: str) -> str | None:
        """The receipt already sent for ``cmd_id`` (commands are idempotent)."""
        with self._lock:
            row = self.conn.execute(
                "SELECT receipt FROM command WHERE device=? AND cmd_id=?", (self.device, cmd_id)
            ).fetchone()
        return None if row is None else str(row[0])

    def save_command(self, cmd_id: str, receipt: str) -> None:
        """Remember the receipt of ``cmd_id``."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO command (device, cmd_id, receipt) VALUES (?, ?, ?)",
                (self.device, cmd_id, receipt),
            )

    def wipe(self) -> int:
        """Delete everything of this device (a store lost); how many records were unsent."""
        lost = self.unsent_count()
        with self.transaction() as conn:
            for table in TABLES:
                conn.execute(f"DELETE FROM {table} WHERE device=?", (self.device,))  # noqa: S608
        return lost
