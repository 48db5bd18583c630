"""Offline records, exactly once: ``(device, epoch, seq)`` is unique, replays change nothing.

:func:`ingest` stores a decoded batch in the caller's transaction and returns the protocol's
`Ack` (`protocol.acks.compute_ack` over every seq stored, ranges the device declared ``gone``
counting as held). A record whose body is malformed but whose seq is readable is kept as a
``malformed`` fact with the reason (the platform never refuses a fact, and the device may delete
it once acknowledged); a record without a readable seq is only counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from onecard.device_agents.protocol.acks import compute_ack, merge_ranges
from onecard.device_agents.protocol.codes import CredentialKind
from onecard.device_agents.protocol.messages import RejectedRecord
from onecard.device_agents.protocol.timesync import CLOCK_FLOOR_MS, corrected_time
from onecard.platform.cards.models import Card
from onecard.platform.db.engine import is_postgres
from onecard.platform.db.tenancy import require_tenant_id
from onecard.platform.devices.models import DeviceEpoch, DeviceRecord
from onecard.platform.devices.services import DeviceRef
from onecard.platform.devices.wire import Ack, DecodedBatch, Record

MAX_MISSING_RANGES = 100
Range = tuple[int, int]


@dataclass(frozen=True)
class Ingested:
    """The ``down/ack`` message plus counts for the bridge's metrics."""

    ack: Ack
    stored: int
    duplicates: int
    malformed: int


def ingest(session: Session, device: DeviceRef, batch: DecodedBatch, *, now: datetime) -> Ingested:
    """Store the new records of ``batch`` and compute the acknowledgement (never commits)."""
    state = _epoch_state(session, device, batch.epoch, now)
    cards = _cards(session, batch.records)
    rows = [_row(cards, device, batch.epoch, r, now) for r in batch.records]
    rows += [
        _malformed_row(device, batch.epoch, e.seq, f"{e.reason.value}: {e.detail}", now)
        for e in batch.rejected
        if e.seq is not None
    ]
    stored = _insert_new(session, rows)
    seqs = [r["seq"] for r in rows]
    if seqs:
        state.highest_seen = max(state.highest_seen, *seqs)
    if batch.gone:
        state.lost = [list(r) for r in merge_ranges([*_lost(state), *batch.gone])]
    ack = _ack(session, state, batch_seqs=seqs)
    rejected = tuple(
        RejectedRecord(seq=e.seq, reason=e.reason.value)
        for e in batch.rejected
        if e.seq is not None and e.seq <= ack.upper
    )
    if rejected:
        ack = ack.model_copy(update={"rejected": rejected[:500]})
    state.updated_at = now
    session.flush()
    return Ingested(ack, stored, len(rows) - stored, len(batch.rejected))


def _lost(state: DeviceEpoch) -> list[Range]:
    return [(int(a), int(b)) for a, b in state.lost]


def _epoch_state(session: Session, device: DeviceRef, epoch: str, now: datetime) -> DeviceEpoch:
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
    stmt = select(DeviceEpoch).where(DeviceEpoch.device_pk == device.pk, DeviceEpoch.epoch == epoch)
    if is_postgres(session):
        stmt = stmt.with_for_update()
    stmt = stmt.execution_options(populate_existing=True)
    found = session.scalars(stmt).one_or_none()
    if found is not None:
        return found
    dialect_insert = pg_insert if is_postgres(session) else sqlite_insert
    session.execute(
        dialect_insert(DeviceEpoch)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["device_pk", "epoch"])
    )
    return session.scalars(stmt).one()


CardKey = tuple[CredentialKind, str]


def _cards(session: Session, records: Sequence[Record]) -> dict[CardKey, tuple[str, str]]:
    """``(card no, status)`` of every card the batch names: one ``IN`` query per credential
    kind instead of one query per record."""
    creds = [r.credential for r in records if r.credential is not None]
    uids = {c.value.upper() for c in creds if c.kind is CredentialKind.UID}
    nos = {c.value for c in creds if c.kind is CredentialKind.CARD_NO}
    out: dict[CardKey, tuple[str, str]] = {}
    for part in _chunks(sorted(uids)):
        for uid, no, status in session.execute(
            select(Card.uid, Card.card_no, Card.status).where(Card.uid.in_(part))
        ):
            out[(CredentialKind.UID, str(uid))] = (no, status)
    for part in _chunks(sorted(nos)):
        for no, status in session.execute(
            select(Card.card_no, Card.status).where(Card.card_no.in_(part))
        ):
            out[(CredentialKind.CARD_NO, no)] = (no, status)
    return out


def _chunks(values: list[str], size: int = 500) -> list[list[str]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _row(
    cards: dict[CardKey, tuple[str, str]],
    device: DeviceRef,
    epoch: str,
    rec: Record,
    now: datetime,
) -> dict[str, Any]:
    corrected, flags = _corrected_time(rec, device.clock_offset_ms)
    card_no, card_flags = _card(cards, rec)
    payload = rec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {
        "tenant_id": device.tenant_id,
        "device_pk": device.pk,
        "epoch": epoch,
        "seq": rec.seq,
        "type": rec.event,
        "card_no": card_no,
        "amount_fen": rec.amount,
        "device_time": rec.device_time,
        "corrected_time": corrected,
        "clock_valid": rec.clock_valid,
        "received_at": now,
        "flags": [*rec.flags, *flags, *card_flags],
        "payload": payload,
    }


def _malformed_row(
    device: DeviceRef, epoch: str, seq: int, why: str, now: datetime
) -> dict[str, Any]:
    return {
        "tenant_id": device.tenant_id,
        "device_pk": device.pk,
        "epoch": epoch,
        "seq": seq,
        "type": "malformed",
        "card_no": None,
        "amount_fen": None,
        "device_time": None,
        "corrected_time": None,
        "clock_valid": False,
        "received_at": now,
        "flags": ["malformed", why[:200]],
        "payload": {},
    }


def _corrected_time(rec: Record, offset_ms: int | None) -> tuple[datetime | None, list[str]]:
    """Device time plus the measured offset (platform − device); flags when unusable."""
    if not rec.clock_valid or rec.device_time < CLOCK_FLOOR_MS:
        return None, ["clock_invalid"]
    ms = corrected_time(rec.device_time, offset_ms or 0)
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms), []


def card_of(session: Session, kind: CredentialKind, value: str) -> Card | None:
    """The card a credential names (by UID or card number), in the current tenant."""
    if kind is CredentialKind.UID:
        return session.scalar(select(Card).where(Card.uid == value.upper()))
    if kind is CredentialKind.CARD_NO:
        return session.scalar(select(Card).where(Card.card_no == value))
    return None


def _card(cards: dict[CardKey, tuple[str, str]], rec: Record) -> tuple[str | None, list[str]]:
    cred = rec.credential
    if cred is None:
        return None, []
    value = cred.value.upper() if cred.kind is CredentialKind.UID else cred.value
    card = cards.get((cred.kind, value))
    if card is None:
        return (cred.value[:32] if cred.kind is CredentialKind.CARD_NO else None), ["unknown_card"]
    card_no, status = card
    return card_no, ([] if status == "active" else ["blacklisted_card"])


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


def _stored_above(session: Session, state: DeviceEpoch, floor: int) -> list[int]:
    return list(
        session.scalars(
            select(DeviceRecord.seq).where(
                DeviceRecord.device_pk == state.device_pk,
                DeviceRecord.epoch == state.epoch,
                DeviceRecord.seq > floor,
            )
        )
    )


def _ack(session: Session, state: DeviceEpoch, *, batch_seqs: Sequence[int] = ()) -> Ack:
    """`compute_ack` over what is stored (everything up to ``acked_upto`` is known held).

    When the batch just stored (or found) ``batch_seqs`` and they continue ``acked_upto``
    without a hole, nothing else above the floor can matter to the contiguous part, so the
    stored seqs are only read when the batch leaves a gap (or is empty)."""
    floor = state.acked_upto
    held = [(1, floor)] if floor else []
    above = sorted({q for q in batch_seqs if q > floor})
    contiguous = bool(above) and above[0] == floor + 1 and above[-1] - above[0] + 1 == len(above)
    # ``highest_seen`` covers every seq ever stored: nothing can be stored above it.
    if contiguous and above[-1] >= state.highest_seen:
        stored = above
    else:
        stored = _stored_above(session, state, floor)
    ack = compute_ack(
        state.epoch,
        stored,
        gone=[*held, *_lost(state)],
        max_missing=MAX_MISSING_RANGES,
    )
    state.acked_upto = ack.acked_upto
    return ack


def mark_lost(
    session: Session, device: DeviceRef, epoch: str, ranges: Sequence[Range], *, now: datetime
) -> Ack:
    """The device answered that ``ranges`` are gone: keep them visible, stop asking for them."""
    state = _epoch_state(session, device, epoch, now)
    state.lost = [list(r) for r in merge_ranges([*_lost(state), *ranges])]
    ack = _ack(session, state)
    state.updated_at = now
    session.flush()
    return ack


def ack_for(session: Session, device: DeviceRef, epoch: str, *, now: datetime) -> Ack:
    """The current ack of ``epoch`` (what a hello is answered with)."""
    state = _epoch_state(session, device, epoch, now)
    ack = _ack(session, state)
    state.updated_at = now
    session.flush()
    return ack


@dataclass(frozen=True)
class Gap:
    """A device epoch with records missing or declared lost (what the console shows)."""

    epoch: str
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
        .order_by(DeviceEpoch.updated_at.desc())
    )
    for st in rows:
        floor = st.acked_upto
        ack = compute_ack(
            st.epoch,
            _stored_above(session, st, floor),
            gone=[*([(1, floor)] if floor else []), *_lost(st)],
            max_missing=MAX_MISSING_RANGES,
        )
        if ack.missing or st.lost:
            out.append(
                Gap(st.epoch, ack.acked_upto, st.highest_seen, ack.missing, tuple(_lost(st)))
            )
    return out
