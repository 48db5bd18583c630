"""Offline records, exactly once: ``(device, epoch, seq)`` is unique, replays change nothing.

:func:`ingest` stores a triaged batch in the caller's transaction and returns the
acknowledgement: the highest contiguous seq stored for the epoch and the ``missing`` ranges
below the highest seq seen. A record whose body is malformed but whose seq is readable is kept
as a ``malformed`` fact with its raw payload (the platform never refuses a fact, and the device
may delete it once acknowledged); a record without a readable seq is only counted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from onecard.platform.cards.models import Card
from onecard.platform.clock import as_utc
from onecard.platform.db.engine import is_postgres
from onecard.platform.db.tenancy import require_tenant_id
from onecard.platform.devices.models import DeviceEpoch, DeviceRecord
from onecard.platform.devices.services import DeviceRef
from onecard.platform.devices.wire import Record, RecordBatch

MAX_MISSING_RANGES = 100
Range = tuple[int, int]


@dataclass(frozen=True)
class Ack:
    """What ``down/ack`` carries, plus counts for the bridge's metrics."""

    epoch: int
    acked_upto: int
    missing: tuple[Range, ...]
    stored: int
    duplicates: int
    malformed: int


def ingest(session: Session, device: DeviceRef, batch: RecordBatch, *, now: datetime) -> Ack:
    """Store the new records of ``batch`` and compute the acknowledgement (never commits)."""
    state = _epoch_state(session, device, batch.epoch, now)
    rows = [_row(session, device, batch.epoch, r, now) for r in batch.records]
    rows += [
        _malformed_row(device, batch.epoch, s, why, raw, now)
        for s, why, raw in batch.malformed
        if s
    ]
    stored = _insert_new(session, rows)
    seqs = [r["seq"] for r in rows]
    if seqs:
        state.highest_seen = max(state.highest_seen, *seqs)
    state.acked_upto, missing = _progress(session, state)
    state.updated_at = now
    session.flush()
    duplicates = len(rows) - stored
    return Ack(batch.epoch, state.acked_upto, missing, stored, duplicates, len(batch.malformed))


def _epoch_state(session: Session, device: DeviceRef, epoch: int, now: datetime) -> DeviceEpoch:
    """The epoch's progress row, created race-free and locked for this transaction."""
    values = {
        "tenant_id": require_tenant_id(),
        "device_pk": device.pk,
        "epoch": epoch,
        "acked_upto": 0,
        "highest_seen": 0,
        "lost": [],
        "first_seen_at": now,
        "updated_at": now,
    }
    dialect_insert = pg_insert if is_postgres(session) else sqlite_insert
    session.execute(
        dialect_insert(DeviceEpoch)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["device_pk", "epoch"])
    )
    stmt = select(DeviceEpoch).where(DeviceEpoch.device_pk == device.pk, DeviceEpoch.epoch == epoch)
    if is_postgres(session):
        stmt = stmt.with_for_update()
    state = session.scalars(stmt.execution_options(populate_existing=True)).one()
    return state


def _row(
    session: Session, device: DeviceRef, epoch: int, rec: Record, now: datetime
) -> dict[str, Any]:
    corrected, flags = _corrected_time(rec, device.clock_offset_ms)
    flags += _card_flags(session, rec.card_no)
    extra = {k: v for k, v in (rec.model_extra or {}).items()}
    return {
        "tenant_id": device.tenant_id,
        "device_pk": device.pk,
        "epoch": epoch,
        "seq": rec.seq,
        "type": rec.type,
        "card_no": rec.card_no,
        "amount_fen": rec.amount_fen,
        "device_time": rec.device_time,
        "corrected_time": corrected,
        "clock_valid": rec.clock_valid,
        "received_at": now,
        "flags": flags,
        "payload": extra,
    }


def _malformed_row(
    device: DeviceRef, epoch: int, seq: int, why: str, raw: dict[str, Any], now: datetime
) -> dict[str, Any]:
    return {
        "tenant_id": device.tenant_id,
        "device_pk": device.pk,
        "epoch": epoch,
        "seq": seq,
        "type": "malformed",
        "card_no": None,
        "amount_fen": None,
        "device_time": "",
        "corrected_time": None,
        "clock_valid": False,
        "received_at": now,
        "flags": ["malformed", why[:200]],
        "payload": {"raw": _json_safe(raw)},
    }


def _json_safe(raw: dict[str, Any]) -> Any:
    text = json.dumps(raw, default=str, ensure_ascii=False)
    return json.loads(text) if len(text) <= 4000 else {"truncated": text[:4000]}


def _corrected_time(rec: Record, offset_ms: int | None) -> tuple[datetime | None, list[str]]:
    """Device time minus the measured offset (device − platform); flags when unusable."""
    if not rec.clock_valid:
        return None, ["clock_invalid"]
    try:
        when = datetime.fromisoformat(rec.device_time)
    except ValueError:
        return None, ["bad_device_time"]
    if when.tzinfo is None:
        return None, ["bad_device_time"]
    return as_utc(when) - timedelta(milliseconds=offset_ms or 0), []


def _card_flags(session: Session, card_no: str | None) -> list[str]:
    if card_no is None:
        return []
    status = session.scalar(select(Card.status).where(Card.card_no == card_no))
    if status is None:
        return ["unknown_card"]
    return [] if status == "active" else ["blacklisted_card"]


def _insert_new(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert rows whose identity is new; returns how many were new."""
    if not rows:
        return 0
    dialect_insert = pg_insert if is_postgres(session) else sqlite_insert
    stmt = (
        dialect_insert(DeviceRecord)
        .on_conflict_do_nothing(index_elements=["device_pk", "epoch", "seq"])
        .returning(DeviceRecord.id)
    )
    unique = list({r["seq"]: r for r in rows}.values())
    return len(session.execute(stmt, unique).all())


def _progress(session: Session, state: DeviceEpoch) -> tuple[int, tuple[Range, ...]]:
    """Highest contiguous seq (lost ranges count as covered) and the gaps above it."""
    lost = [(int(a), int(b)) for a, b in state.lost]
    have = set(
        session.scalars(
            select(DeviceRecord.seq).where(
                DeviceRecord.device_pk == state.device_pk,
                DeviceRecord.epoch == state.epoch,
                DeviceRecord.seq > state.acked_upto,
            )
        )
    )
    upto = state.acked_upto
    while upto + 1 in have or _in_ranges(upto + 1, lost):
        upto += 1
    missing: list[Range] = []
    seq = upto + 1
    while seq <= state.highest_seen and len(missing) < MAX_MISSING_RANGES:
        if seq in have or _in_ranges(seq, lost):
            seq += 1
            continue
        start = seq
        while seq <= state.highest_seen and seq not in have and not _in_ranges(seq, lost):
            seq += 1
        missing.append((start, seq - 1))
    return upto, tuple(missing)


def _in_ranges(seq: int, ranges: Sequence[Range]) -> bool:
    return any(a <= seq <= b for a, b in ranges)


def mark_lost(
    session: Session, device: DeviceRef, epoch: int, ranges: Sequence[Range], *, now: datetime
) -> Ack:
    """The device answered that ``ranges`` are gone: keep them visible, stop asking for them."""
    state = _epoch_state(session, device, epoch, now)
    state.lost = [*state.lost, *([a, b] for a, b in ranges)]
    state.acked_upto, missing = _progress(session, state)
    state.updated_at = now
    session.flush()
    return Ack(epoch, state.acked_upto, missing, 0, 0, 0)


@dataclass(frozen=True)
class Gap:
    """A device epoch with records missing or declared lost (what the console shows)."""

    epoch: int
    acked_upto: int
    highest_seen: int
    missing: tuple[Range, ...]
    lost: tuple[Range, ...]


def gaps(session: Session, device_pk: int) -> list[Gap]:
    """Every epoch of a device whose records are not all stored, newest first."""
    out = []
    rows = session.scalars(
        select(DeviceEpoch)
        .where(DeviceEpoch.device_pk == device_pk)
        .order_by(DeviceEpoch.epoch.desc())
    )
    for st in rows:
        _upto, missing = _progress(session, st)
        if missing or st.lost:
            lost = tuple((int(a), int(b)) for a, b in st.lost)
            out.append(Gap(st.epoch, st.acked_upto, st.highest_seen, missing, lost))
    return out
