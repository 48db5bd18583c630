"""Offline records, exactly once: ``(device, epoch, seq)`` is unique, replays change nothing.

:func:`ingest` stores a decoded batch in the caller's transaction and returns the protocol's
`Ack` (`protocol.acks.compute_ack` over every seq stored, ranges the device declared ``gone``
counting as held). A record whose body is malformed but whose seq is readable is kept as a
``malformed`` fact with the reason (the platform never refuses a fact, and the device may delete
it once acknowledged); a record without a readable seq is only counted.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import and_, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from onecard.device_agents.protocol.acks import compute_ack, merge_ranges
from onecard.device_agents.protocol.codes import CredentialKind
from onecard.device_agents.protocol.messages import RejectedRecord
from onecard.device_agents.protocol.timesync import CLOCK_FLOOR_MS, corrected_time
from onecard.platform.cards.models import Card
from onecard.platform.db.base import UtcDateTime
from onecard.platform.db.engine import is_postgres
from onecard.platform.db.sql import DIALECTS, in_values
from onecard.platform.db.tenancy import unscoped
from onecard.platform.devices.models import DeviceEpoch, DeviceRecord
from onecard.platform.devices.services import DeviceRef
from onecard.platform.devices.wire import Ack, DecodedBatch, Record

MAX_MISSING_RANGES = 100
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)  # times an int: half the cost of timedelta(milliseconds=)
T = TypeVar("T")
Range = tuple[int, int]


@dataclass(frozen=True)
class StoredRecord:
    """A record as stored, what ``onecard_records_stored`` hands the modules.

    ``payload`` is the record as the device sent it (JSON form, aliases, no nulls: ``extra``,
    ``clearing`` and the rest), parsed from ``payload_json`` on first use: most modules never
    read the records of other modules' devices. ``flags`` include the platform's
    (``unknown_card``, ``blacklisted_card``, ``clock_invalid``).
    """

    epoch: str
    seq: int
    type: str
    card_no: str | None
    amount_fen: int | None
    device_time: int | None
    corrected_time: datetime | None
    clock_valid: bool
    flags: tuple[str, ...]
    payload_json: str = field(default="{}", repr=False)

    @functools.cached_property
    def payload(self) -> dict[str, Any]:
        """The record as the device sent it."""
        parsed: dict[str, Any] = json.loads(self.payload_json)
        return parsed

    @classmethod
    def of_row(cls, row: DeviceRecord) -> StoredRecord:
        """The record as ``onecard_records_stored`` handed it over (to process it again)."""
        return cls(
            epoch=row.epoch,
            seq=row.seq,
            type=row.type,
            card_no=row.card_no,
            amount_fen=row.amount_fen,
            device_time=row.device_time,
            corrected_time=row.corrected_time,
            clock_valid=row.clock_valid,
            flags=tuple(row.flags),
            payload_json=json.dumps(row.payload),
        )


@dataclass(frozen=True)
class Ingested:
    """The ``down/ack`` message plus counts for the bridge's metrics."""

    ack: Ack
    stored: int
    duplicates: int
    malformed: int
    new_rows: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    @functools.cached_property
    def new(self) -> tuple[StoredRecord, ...]:
        """The well-formed records stored for the first time (built when first asked for:
        with no module listening, nobody does)."""
        return tuple(_stored(r) for r in self.new_rows)


@dataclass(frozen=True)
class Upload:
    """One decoded ``up/records`` batch and its sender."""

    device: DeviceRef
    batch: DecodedBatch


def ingest(session: Session, device: DeviceRef, batch: DecodedBatch, *, now: datetime) -> Ingested:
    """Store the new records of ``batch`` and compute the acknowledgement (never commits).

    ``Ingested.new`` holds the well-formed records this call stored for the first time (what
    the caller hands to ``onecard_records_stored``)."""
    return ingest_many(session, [Upload(device, batch)], now=now)[0]


def ingest_many(session: Session, uploads: Sequence[Upload], *, now: datetime) -> list[Ingested]:
    """:func:`ingest` for many uploads (any devices, any tenants) in the caller's transaction.

    The statements are shared: one read of the epoch states, one card lookup per credential
    kind, one multi-row insert of every record. The results are those of ingesting the
    uploads one after the other in the given order: a record that two uploads carry is new
    only for the first, and its ack counts it for both. Tenants are written out in every
    statement, so the caller need not (and, for several tenants, cannot) scope the session.
    """
    if not uploads:
        return []
    with unscoped(reason="bridge: one ingest batch spans several devices and tenants"):
        states = _epoch_states(session, [(u.device, u.batch.epoch) for u in uploads], now)
        cards = _cards(session, uploads)
        per_upload = [_rows(u, cards, now) for u in uploads]
        new_keys = _insert_new(session, [r for rows in per_upload for r in rows], states)
        results = []
        for upload, rows in zip(uploads, per_upload, strict=True):
            state = states[(upload.device.pk, upload.batch.epoch)]
            results.append(_settle(session, upload, state, rows, new_keys, now))
        session.flush()
    return results


def _rows(upload: Upload, cards: CardMap, now: datetime) -> list[dict[str, Any]]:
    d, batch = upload.device, upload.batch
    rows = [_row(cards, d, batch.epoch, r, now) for r in batch.records]
    rows += [
        _malformed_row(d, batch.epoch, e.seq, f"{e.reason.value}: {e.detail}", now)
        for e in batch.rejected
        if e.seq is not None
    ]
    return rows


def _settle(
    session: Session,
    upload: Upload,
    state: DeviceEpoch,
    rows: list[dict[str, Any]],
    new_keys: set[RecordKey],
    now: datetime,
) -> Ingested:
    """Advance the epoch's state past ``rows`` and compute the upload's ack.

    Claims (removes) the keys it reports new from ``new_keys``, so a later upload of the same
    batch reports them as duplicates."""
    batch, pk = upload.batch, upload.device.pk
    fresh: list[dict[str, Any]] = []
    stored = 0
    for r in rows:
        key = (pk, batch.epoch, r["seq"])
        if key in new_keys:
            new_keys.discard(key)
            stored += 1
            if r["type"] != MALFORMED:
                fresh.append(r)
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
    return Ingested(ack, stored, len(rows) - stored, len(batch.rejected), tuple(fresh))


def _stored(row: dict[str, Any]) -> StoredRecord:
    return StoredRecord(
        epoch=row["epoch"],
        seq=row["seq"],
        type=row["type"],
        card_no=row["card_no"],
        amount_fen=row["amount_fen"],
        device_time=row["device_time"],
        corrected_time=row["corrected_time"],
        clock_valid=row["clock_valid"],
        flags=tuple(row["flags"]),
        payload_json=row["payload_json"],
    )


def _lost(state: DeviceEpoch) -> list[Range]:
    return [(int(a), int(b)) for a, b in state.lost]


def _epoch_state(session: Session, device: DeviceRef, epoch: str, now: datetime) -> DeviceEpoch:
    """The epoch's progress row, created race-free and locked for this transaction."""
    with unscoped(reason="bridge: the device's epoch row (tenant written out)"):
        return _epoch_states(session, [(device, epoch)], now)[(device.pk, epoch)]


EpochKey = tuple[int, str]


def _epoch_states(
    session: Session, wanted: Sequence[tuple[DeviceRef, str]], now: datetime
) -> dict[EpochKey, DeviceEpoch]:
    """The progress rows of ``wanted`` (device, epoch) pairs, created race-free where missing
    (insert, ignore conflicts, read again) and locked for this transaction on PostgreSQL."""
    devices = {(d.pk, epoch): d for d, epoch in wanted}
    found = _read_epochs(session, devices)
    missing = [key for key in devices if key not in found]
    if missing:
        dialect_insert = pg_insert if is_postgres(session) else sqlite_insert
        session.execute(
            dialect_insert(DeviceEpoch).on_conflict_do_nothing(
                index_elements=["device_pk", "epoch"]
            ),
            [_new_epoch(devices[key], key[1], now) for key in missing],
        )
        found.update(_read_epochs(session, {key: devices[key] for key in missing}))
    return found


def _read_epochs(session: Session, keys: dict[EpochKey, DeviceRef]) -> dict[EpochKey, DeviceEpoch]:
    pks = sorted({pk for pk, _e in keys})
    out: dict[EpochKey, DeviceEpoch] = {}
    stmt = _EPOCHS_BY[session.get_bind().dialect.name]
    for part in _chunks(pks):
        for st in session.scalars(stmt, {"pks": part}):
            if (st.device_pk, st.epoch) in keys:
                out[(st.device_pk, st.epoch)] = st
    return out


def _new_epoch(device: DeviceRef, epoch: str, now: datetime) -> dict[str, Any]:
    return {
        "tenant_id": device.tenant_id,
        "device_pk": device.pk,
        "epoch": epoch,
        "acked_upto": 0,
        "highest_seen": 0,
        "lost": [],
        "first_seen_at": now,
        "updated_at": now,
    }


CardKey = tuple[int, CredentialKind, str]  # tenant, credential kind, normalised value
CardMap = dict[CardKey, tuple[str, str]]
RecordKey = tuple[int, str, int]  # device pk, epoch, seq
MALFORMED = "malformed"
# Module constants: an enum member lookup is a descriptor call on Python 3.11, per record.
_UID, _CARD_NO = CredentialKind.UID, CredentialKind.CARD_NO


def _cards(session: Session, uploads: Sequence[Upload]) -> CardMap:
    """``(card no, status)`` of every card the uploads name, by tenant: one ``IN`` query per
    credential kind for the whole batch instead of one query per record."""
    uids: set[str] = set()
    nos: set[str] = set()
    tenants: set[int] = set()
    for u in uploads:
        tenants.add(u.device.tenant_id)
        for r in u.batch.records:
            c = r.credential
            if c is not None and c.kind is _UID:
                uids.add(c.value.upper())
            elif c is not None and c.kind is _CARD_NO:
                nos.add(c.value)
    out: CardMap = {}
    statements = _CARDS_BY[session.get_bind().dialect.name]
    for kind, values in ((CredentialKind.UID, uids), (CredentialKind.CARD_NO, nos)):
        for part in _chunks(sorted(values)):
            params = {"tenants": sorted(tenants), "values": part}
            for tid, value, no, status in session.execute(statements[kind], params):
                out[(tid, kind, str(value))] = (no, status)
    return out


def _cards_query(column: Any, dialect: str) -> Any:
    return select(Card.tenant_id, column, Card.card_no, Card.status).where(
        in_values(Card.tenant_id, "tenants", dialect), in_values(column, "values", dialect)
    )


# Built once per dialect (list parameters): building the select for every chunk cost more
# than running it.
_CARDS_BY = {
    dialect: {
        CredentialKind.UID: _cards_query(Card.uid, dialect),
        CredentialKind.CARD_NO: _cards_query(Card.card_no, dialect),
    }
    for dialect in DIALECTS
}


def _epochs_query(dialect: str) -> Any:
    stmt = (
        select(DeviceEpoch)
        .where(in_values(DeviceEpoch.device_pk, "pks", dialect))
        .execution_options(populate_existing=True)
    )
    # PostgreSQL: the epochs' rows are locked for the transaction (see `_insert_new`).
    return stmt.with_for_update() if dialect == "postgresql" else stmt


_EPOCHS_BY = {dialect: _epochs_query(dialect) for dialect in DIALECTS}


def _chunks(values: list[T], size: int = 500) -> list[list[T]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _row(
    cards: CardMap,
    device: DeviceRef,
    epoch: str,
    rec: Record,
    now: datetime,
) -> dict[str, Any]:
    corrected, flags = _corrected_time(rec, device.clock_offset_ms)
    card_no, card_flags = _card(cards, device.tenant_id, rec)
    # Serialised once, in pydantic's Rust core, and inserted as text (see `_bulk_insert`).
    payload = rec.model_dump_json(by_alias=True, exclude_none=True)
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
        "payload_json": payload,
    }


def _malformed_row(
    device: DeviceRef, epoch: str, seq: int, why: str, now: datetime
) -> dict[str, Any]:
    return {
        "tenant_id": device.tenant_id,
        "device_pk": device.pk,
        "epoch": epoch,
        "seq": seq,
        "type": MALFORMED,
        "card_no": None,
        "amount_fen": None,
        "device_time": None,
        "corrected_time": None,
        "clock_valid": False,
        "received_at": now,
        "flags": ["malformed", why[:200]],
        "payload_json": "{}",
    }


def _corrected_time(rec: Record, offset_ms: int | None) -> tuple[datetime | None, list[str]]:
    """Device time plus the measured offset (platform − device); flags when unusable."""
    if not rec.clock_valid or rec.device_time < CLOCK_FLOOR_MS:
        return None, ["clock_invalid"]
    ms = corrected_time(rec.device_time, offset_ms or 0)
    return _UNIX_EPOCH + _ONE_MS * ms, []


def card_of(session: Session, kind: CredentialKind, value: str) -> Card | None:
    """The card a credential names (by UID or card number), in the current tenant."""
    if kind is CredentialKind.UID:
        return session.scalar(select(Card).where(Card.uid == value.upper()))
    if kind is CredentialKind.CARD_NO:
        return session.scalar(select(Card).where(Card.card_no == value))
    return None


def _card(cards: CardMap, tenant_id: int, rec: Record) -> tuple[str | None, list[str]]:
    cred = rec.credential
    if cred is None:
        return None, []
    value = cred.value.upper() if cred.kind is _UID else cred.value
    card = cards.get((tenant_id, cred.kind, value))
    if card is None:
        return (cred.value[:32] if cred.kind is _CARD_NO else None), ["unknown_card"]
    card_no, status = card
    return card_no, ([] if status == "active" else ["blacklisted_card"])


def _insert_new(
    session: Session, rows: Sequence[dict[str, Any]], states: dict[EpochKey, DeviceEpoch]
) -> set[RecordKey]:
    """Insert the rows whose identity is new; returns their keys.

    The epoch rows are locked for this transaction (PostgreSQL) or the database has one
    writer (SQLite), so what is stored cannot change under us and the epoch's state mostly
    tells (:func:`_known`); only the other seqs are looked up. The new rows then go in with a
    plain multi-row insert (the driver's executemany: one parsed statement, no RETURNING). If
    the database still finds a duplicate, the rows go in again ignoring conflicts.
    """
    unique = {(r["device_pk"], r["epoch"], r["seq"]): r for r in rows}
    if not unique:
        return set()
    known = {k: _known(states[(k[0], k[1])], k[2]) for k in unique}
    stored = _stored_keys(session, [k for k, v in known.items() if v is None])
    new = {
        k: r
        for k, r in unique.items()
        if known[k] is False or (known[k] is None and k not in stored)
    }
    if not new:
        return set()
    try:
        with session.begin_nested():
            _bulk_insert(session, list(new.values()))
    except IntegrityError:
        return _insert_ignoring(session, list(new.values()))
    return set(new)


_COLUMNS = (
    "tenant_id",
    "device_pk",
    "epoch",
    "seq",
    "type",
    "card_no",
    "amount_fen",
    "device_time",
    "corrected_time",
    "clock_valid",
    "received_at",
    "flags",
    "payload",
)


# Built from constants only (the table's name, the column names above, the placeholder).
_INSERT_SQL = {
    mark: f"INSERT INTO {DeviceRecord.__tablename__} ({', '.join(_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join([mark] * len(_COLUMNS))})"
    for mark in ("?", "%s")
}


# Built from constants only, as `_INSERT_SQL`.
_COPY_SQL = f"COPY {DeviceRecord.__tablename__} ({', '.join(_COLUMNS)}) FROM STDIN"


def _bulk_insert(session: Session, rows: list[dict[str, Any]]) -> None:
    """Plain insert of known-new rows past SQLAlchemy's per-row parameter processing: a
    ``COPY`` on PostgreSQL, the driver's ``executemany`` (a C loop) on SQLite.

    The two JSON columns go in as JSON text (``flags`` serialised here, ``payload`` by pydantic
    in `_row`); timestamps through the column type's own bind processor, so they are stored
    exactly as the ORM stores them. On PostgreSQL, ``COPY`` costs the server about 15 µs a row
    where the pipelined ``executemany`` cost 25 and the client a third of its time
    (docs/devices.md, "Device benchmarks"); a duplicate key fails the ``COPY`` as it failed
    the insert, and the caller's savepoint takes it back the same way."""
    conn = session.connection()
    dialect = conn.dialect
    stamp = functools.lru_cache(maxsize=1024)(_stamp_processor(dialect))  # received_at repeats
    params = [
        (
            r["tenant_id"],
            r["device_pk"],
            r["epoch"],
            r["seq"],
            r["type"],
            r["card_no"],
            r["amount_fen"],
            r["device_time"],
            stamp(r["corrected_time"]),
            r["clock_valid"],
            stamp(r["received_at"]),
            _flags_json(tuple(r["flags"])),
            r["payload_json"],
        )
        for r in rows
    ]
    if dialect.name == "postgresql":
        _copy(conn, params)
    else:
        conn.exec_driver_sql(_INSERT_SQL["?" if dialect.paramstyle == "qmark" else "%s"], params)


@functools.lru_cache(maxsize=512)
def _flags_json(flags: tuple[str, ...]) -> str:
    """``flags`` as JSON text (a handful of combinations recur across every record)."""
    return json.dumps(list(flags))


def _copy(conn: Connection, params: list[tuple[Any, ...]]) -> None:
    """``COPY … FROM STDIN`` of ``params`` through psycopg (rows written by its C adapters).

    Driver errors are raised as SQLAlchemy's (``IntegrityError`` for a duplicate key, a
    deadlock as the ``DBAPIError`` the bridge retries), as if the statement had gone through
    SQLAlchemy."""
    import psycopg

    driver = conn.connection.dbapi_connection
    assert driver is not None
    try:
        with driver.cursor() as cursor, cursor.copy(_COPY_SQL) as copy:  # type: ignore[attr-defined]
            for row in params:
                copy.write_row(row)
    except psycopg.Error as exc:
        raise DBAPIError.instance(_COPY_SQL, None, exc, psycopg.Error) from exc


def _stamp_processor(dialect: Dialect) -> Callable[[datetime | None], Any]:
    """The bind processor of a `UtcDateTime` column on ``dialect`` (identity if none)."""
    found = _STAMPS.get(dialect.name)
    if found is None:
        # The dialect's own implementation (on SQLite, the ORM's text form): the generic
        # type's processor would leave the datetime to the driver, which writes another form.
        column_type = UtcDateTime()
        processor = column_type.dialect_impl(dialect).bind_processor(dialect)
        found = processor if processor is not None else (lambda value: value)
        _STAMPS[dialect.name] = found
    return found


_STAMPS: dict[str, Callable[[datetime | None], Any]] = {}


def _known(state: DeviceEpoch, seq: int) -> bool | None:
    """Whether ``seq`` is stored, when the epoch's state tells: ``False`` above everything ever
    stored, ``True`` within the acknowledged prefix (unless the device had declared it gone: a
    late copy of such a record is still a fact), ``None`` when only a lookup can tell."""
    if seq > state.highest_seen:
        return False
    if seq <= state.acked_upto and not any(a <= seq <= b for a, b in _lost(state)):
        return True
    return None


def _stored_keys(session: Session, keys: Sequence[RecordKey]) -> set[RecordKey]:
    """Which of ``keys`` are stored (one query per 500, by device, epoch and seq range)."""
    found: set[RecordKey] = set()
    wanted = set(keys)
    for part in _chunks(sorted(keys)):
        ranges: dict[EpochKey, list[int]] = {}
        for pk, epoch, seq in part:
            ranges.setdefault((pk, epoch), []).append(seq)
        where = or_(
            *(
                and_(
                    DeviceRecord.device_pk == pk,
                    DeviceRecord.epoch == epoch,
                    DeviceRecord.seq.between(min(seqs), max(seqs)),
                )
                for (pk, epoch), seqs in ranges.items()
            )
        )
        stmt = select(DeviceRecord.device_pk, DeviceRecord.epoch, DeviceRecord.seq).where(where)
        found |= {(int(pk), str(e), int(q)) for pk, e, q in session.connection().execute(stmt)}
    return found & wanted


def _orm_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its payload as the JSON column type takes it (a dict, not text)."""
    out = {k: v for k, v in row.items() if k != "payload_json"}
    out["payload"] = json.loads(row["payload_json"])
    return out


def _insert_ignoring(session: Session, rows: list[dict[str, Any]]) -> set[RecordKey]:
    """The safe path: insert, ignore conflicts, return what was new (RETURNING)."""
    dialect_insert = pg_insert if is_postgres(session) else sqlite_insert
    stmt = (
        dialect_insert(DeviceRecord)
        .on_conflict_do_nothing(index_elements=["device_pk", "epoch", "seq"])
        .returning(DeviceRecord.device_pk, DeviceRecord.epoch, DeviceRecord.seq)
    )
    rows = [_orm_row(r) for r in rows]
    out: set[RecordKey] = set()
    for part in _chunks(rows, 1000):
        result = session.connection().execute(stmt, part)
        out |= {(int(pk), str(e), int(q)) for pk, e, q in result}
    return out


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
    elif state.highest_seen <= floor:
        stored = []  # nothing was ever stored above the floor (a hello after a full upload)
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


def acks_for(
    session: Session, wanted: Sequence[tuple[DeviceRef, str]], *, now: datetime
) -> dict[EpochKey, Ack]:
    """The current ack of each ``(device, epoch)`` (what a hello is answered with): the
    progress rows read (and created) together, written in one flush."""
    with unscoped(reason="bridge: the devices' epoch rows (tenant written out)"):
        states = _epoch_states(session, wanted, now)
    out: dict[EpochKey, Ack] = {}
    for device, epoch in wanted:
        state = states[(device.pk, epoch)]
        out[(device.pk, epoch)] = _ack(session, state)
        state.updated_at = now
    session.flush()
    return out


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
