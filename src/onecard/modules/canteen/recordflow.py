"""The canteen's part of the offline record flow (ARCHITECTURE §6): stored POS records → sales.

The bridge stores every record a POS uploads (``up/records``) and hands the new ones to
``onecard_records_stored``; :func:`process` turns a POS's sale records (event
``canteen_sale``, or any record carrying a ``clearing`` field) into canteen sales:

* a record with ``clearing`` was paid from the CPU card's own purse:
  :mod:`onecard.modules.canteen.cardpurse` clears it through the platform's verifier;
* any other sale record was charged to the holder's platform purses and MACed by the POS:
  :mod:`onecard.modules.canteen.offline` checks the MAC in the key service and posts it,
  unless its ``req_id`` names a tap the platform already allowed online (then it is recorded
  flagged ``decided_online`` and not posted again).

Each record makes at most one sale (the sale is keyed by the device record), so running a
record twice changes nothing. When the module fails the bridge keeps the records; then
:func:`reprocess` re-runs every stored record of a canteen device that has no sale yet.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from onecard.device_agents.protocol.messages import MAX_SAFE_INT
from onecard.modules.canteen import cardpurse, offline, rules
from onecard.modules.canteen.cardpurse import CardReport, CardSale
from onecard.modules.canteen.context import audit_event
from onecard.modules.canteen.models import Pos, Sale
from onecard.modules.canteen.offline import IngestReport, OfflineSale
from onecard.modules.canteen.services import KEY
from onecard.platform.actors import Actor
from onecard.platform.cards.keyring import Keyring
from onecard.platform.db.tenancy import require_tenant_id
from onecard.platform.devices.ingest import StoredRecord
from onecard.platform.devices.models import Device, DeviceRecord
from onecard.platform.errors import NotFound, OneCardError

log = logging.getLogger(__name__)

DEVICE_PERMISSIONS = frozenset({"cards.freeze", "clearing.submit"})
REPROCESS_CHUNK = 500


@dataclass(frozen=True)
class FlowReport:
    """What :func:`process` did with one POS's records (``None``: no such records)."""

    account_sales: IngestReport | None = None
    card_sales: CardReport | None = None

    @property
    def recorded(self) -> int:
        """Sales recorded (posted or not)."""
        return sum(r.recorded for r in (self.account_sales, self.card_sales) if r is not None)


def is_sale_record(record: StoredRecord) -> bool:
    """Whether a stored record is a canteen sale (MACed, or carrying a clearing record)."""
    return record.type == rules.SALE_EVENT or "clearing" in record.payload


def process(
    session: Session,
    device_pk: int,
    device_id: str,
    records: Sequence[StoredRecord],
    *,
    keyring: Keyring,
    now: datetime,
) -> FlowReport:
    """Record a sale for each sale record of the POS ``device_id`` that has none yet.

    Runs in the caller's transaction as the device (an actor that may freeze cards and submit
    clearing records). A device bound to no POS records nothing (logged): its records wait for
    :func:`reprocess`. Raises when the key service cannot verify at all; nothing is then kept.
    """
    sales = [r for r in records if is_sale_record(r)]
    pos = session.scalar(select(Pos).where(Pos.device_pk == device_pk)) if sales else None
    if pos is None:
        if sales:
            log.warning("canteen: %d sale records from %s, a device bound to no POS; kept for "
                        "`onecard canteen reprocess`", len(sales), device_id)  # fmt: skip
        return FlowReport()
    ids = _record_ids(session, device_pk, sales)
    actor = device_actor(device_id)
    keys = keyring.service(session, actor=actor, now=now)
    account = [
        account_sale(device_id, ids[(r.epoch, r.seq)], r) for r in sales if not _from_card(r)
    ]
    card = [card_sale(device_id, ids[(r.epoch, r.seq)], r) for r in sales if _from_card(r)]
    return FlowReport(
        offline.ingest_offline_sales(session, pos, account, keys=keys, actor=actor, now=now)
        if account
        else None,
        cardpurse.record_card_sales(session, pos, card, keys=keys, actor=actor, now=now)
        if card
        else None,
    )


def device_actor(device_id: str) -> Actor:
    """The POS as the actor of what its records say (it may freeze cards, submit clearing)."""
    return Actor(type="device", id=device_id, tenant_id=require_tenant_id(),
                 permissions=DEVICE_PERMISSIONS)  # fmt: skip


def _from_card(record: StoredRecord) -> bool:
    return "clearing" in record.payload


def _record_ids(
    session: Session, device_pk: int, records: Sequence[StoredRecord]
) -> dict[tuple[str, int], int]:
    """Database ids of the records, by ``(epoch, seq)``."""
    rows = session.execute(
        select(DeviceRecord.epoch, DeviceRecord.seq, DeviceRecord.id).where(
            DeviceRecord.device_pk == device_pk,
            DeviceRecord.epoch.in_({r.epoch for r in records}),
            DeviceRecord.seq.in_({r.seq for r in records}),
        )
    )
    ids = {(epoch, seq): rid for epoch, seq, rid in rows}
    missing = [(r.epoch, r.seq) for r in records if (r.epoch, r.seq) not in ids]
    if missing:
        raise NotFound("records not stored", device_pk=device_pk, missing=missing[:10])
    return ids


# --- reading a stored record ------------------------------------------------------------------


def account_sale(device_id: str, record_id: int, record: StoredRecord) -> OfflineSale:
    """A purse-charged sale as its record says it; what the MAC covers is taken as uploaded."""
    payload, extra = record.payload, _extra(record.payload)
    presented = _credential(payload)
    signed = rules.mac_message(
        {
            "device_id": device_id, "epoch": record.epoch, "seq": record.seq,
            "card_no": presented, "amount_fen": payload.get("amount"),
            "list_fen": extra.get("list_fen"), "device_time": payload.get("device_time"),
            "period": extra.get("period"),
        }
    )  # fmt: skip
    amount = _fen(record.amount_fen) or 0
    return OfflineSale(
        record_id=record_id, device_id=device_id, seq=record.seq,
        card_no=record.card_no or presented[:32], list_fen=_list_fen(extra, amount),
        amount_fen=amount, occurred_at=record.corrected_time, signed=signed,
        mac=str(extra.get("mac") or "")[:64], key_version=_key_version(extra),
        period=_period(extra), flags=record.flags, req_id=_req_id(payload),
    )  # fmt: skip


def card_sale(device_id: str, record_id: int, record: StoredRecord) -> CardSale:
    """A card-purse sale as its record says it (the clearing record decides the amount)."""
    payload, extra = record.payload, _extra(record.payload)
    return CardSale(
        record_id=record_id, device_id=device_id, seq=record.seq,
        card_no=record.card_no or _credential(payload)[:32] or None,
        amount_fen=_fen(record.amount_fen) or 0, list_fen=_fen(extra.get("list_fen")),
        occurred_at=record.corrected_time, clearing=str(payload.get("clearing", "")),
        period=_period(extra), flags=record.flags,
    )  # fmt: skip


def _extra(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    extra = payload.get("extra")
    return extra if isinstance(extra, dict) else {}


def _credential(payload: Mapping[str, Any]) -> str:
    credential = payload.get("credential")
    value = credential.get("value") if isinstance(credential, dict) else None
    return value if isinstance(value, str) else ""


def _fen(value: object) -> int | None:
    """An amount a column can hold, else ``None`` (never a bool)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SAFE_INT:
        return value
    return None


def _list_fen(extra: Mapping[str, Any], amount: int) -> int:
    listed = _fen(extra.get("list_fen"))
    return listed if listed is not None and listed >= amount else amount


def _key_version(extra: Mapping[str, Any]) -> int | None:
    version = _fen(extra.get("key_version"))
    return version if version is not None and 0 <= version <= 0xFF else None


def _req_id(payload: Mapping[str, Any]) -> str | None:
    """The online request a POS decided offline after it timed out (``None``: none, or not
    one the platform could have stored)."""
    req_id = payload.get("req_id")
    return req_id if isinstance(req_id, str) and 0 < len(req_id) <= 64 else None


def _period(extra: Mapping[str, Any]) -> str | None:
    period = extra.get("period")
    return period if isinstance(period, str) and 0 < len(period) <= 20 else None


# --- re-running what a failure left ---------------------------------------------------------


@dataclass(frozen=True)
class ReprocessReport:
    """What :func:`reprocess` did: records looked at, sales recorded, devices that failed."""

    records: int
    recorded: int
    failed: dict[str, str] = field(default_factory=dict)


def reprocess(
    session: Session,
    keyring: Keyring,
    *,
    actor: Actor,
    now: datetime,
    device_id: str | None = None,
) -> ReprocessReport:
    """Re-run every stored record of the tenant's canteen devices (or of ``device_id``) that
    has no sale yet; a second run records nothing. Each device runs in a savepoint: one that
    fails (named in the report) keeps its records for the next run, the others go on.
    Audited ``canteen.records.reprocessed``."""
    actor.ensure("canteen.reprocess")
    looked, recorded, failed, after = 0, 0, dict[str, str](), 0
    while rows := _unsold(session, after=after, device_id=device_id):
        after, looked = rows[-1][1].id, looked + len(rows)
        for (pk, dev_id), records in _by_device(rows).items():
            if dev_id in failed:
                continue
            try:
                with session.begin_nested():
                    done = process(session, pk, dev_id, records, keyring=keyring, now=now)
                recorded += done.recorded
            except OneCardError as err:
                log.warning("canteen reprocess: device %s failed: %s", dev_id, err.message)
                failed[dev_id] = err.message
    data = {"records": looked, "recorded": recorded, "failed": failed, "device": device_id}
    audit_event(session, "canteen.records.reprocessed", device_id, data, actor, now, obj="device")
    return ReprocessReport(looked, recorded, failed)


def _unsold(
    session: Session, *, after: int, device_id: str | None
) -> list[tuple[Device, DeviceRecord]]:
    """The next records (by id) of canteen devices that no sale came from yet."""
    stmt = (
        select(Device, DeviceRecord)
        .join(Device, Device.id == DeviceRecord.device_pk)
        .where(
            Device.module == KEY,
            DeviceRecord.id > after,
            DeviceRecord.type != "malformed",
            ~exists().where(Sale.record_id == DeviceRecord.id),
        )
        .order_by(DeviceRecord.id)
        .limit(REPROCESS_CHUNK)
    )
    if device_id is not None:
        stmt = stmt.where(Device.device_id == device_id)
    return [(d, r) for d, r in session.execute(stmt)]


def _by_device(
    rows: Sequence[tuple[Device, DeviceRecord]],
) -> dict[tuple[int, str], list[StoredRecord]]:
    out: dict[tuple[int, str], list[StoredRecord]] = defaultdict(list)
    for device, row in rows:
        out[(device.id, device.device_id)].append(_stored(row))
    return out


def _stored(row: DeviceRecord) -> StoredRecord:
    """A stored record as the hook would have received it."""
    return StoredRecord.of_row(row)
