"""List distribution to devices: deltas (or chunked snapshots), receipts, "not yet protected".

The platform's lists are versioned by their owners (the card blacklist by
:mod:`onecard.platform.cards.blacklist`). Here each device's position is tracked in
:class:`DeviceListState`: ``sent_version`` (what was published) and ``applied_version`` (what the
device confirmed by receipt or heartbeat). :func:`due_updates` is what the bridge's distributor
publishes; any number of bridges may run it, a device ignores a delta it already holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from onecard.device_agents.protocol.blacklist import credential_key, snapshot_chunks
from onecard.device_agents.protocol.codes import CredentialKind
from onecard.platform.cards import blacklist
from onecard.platform.cards.models import BlacklistChange, Card
from onecard.platform.db.engine import is_postgres
from onecard.platform.db.tenancy import require_tenant_id, unscoped
from onecard.platform.devices.models import Device, DeviceListReceipt, DeviceListState
from onecard.platform.devices.wire import BLACKLIST, ListDelta, ListSnapshotChunk
from onecard.platform.errors import NotFound

# One hello or heartbeat asks for a device's state row several times: read it once per session
# (the bridge opens a session per unit of work, so the memo never outlives a transaction's rows;
# any rollback, a savepoint's too, forgets it: a row made in the savepoint is gone, `_forget`).
_MEMO = "onecard.devices.list_states"
SNAPSHOT_AFTER = 5000  # versions behind: a snapshot is smaller than the delta
RESEND_AFTER = timedelta(seconds=30)


@dataclass(frozen=True)
class ListUpdate:
    """One ``down/lists`` message for one device."""

    device_id: str
    message: ListDelta | ListSnapshotChunk


def card_keys(session: Session, card_nos: Iterable[str]) -> list[int]:
    """The list keys (`protocol.blacklist.credential_key`) of cards: their card number and,
    when known, their UID, so a device finds the card by whichever credential it reads."""
    wanted = sorted(set(card_nos))
    uids: dict[str, str | None] = {}
    for i in range(0, len(wanted), 1000):
        part = wanted[i : i + 1000]
        rows = session.execute(select(Card.card_no, Card.uid).where(Card.card_no.in_(part)))
        uids.update((no, uid) for no, uid in rows)
    keys = {credential_key(CredentialKind.CARD_NO, c) for c in wanted}
    keys |= {credential_key(CredentialKind.UID, u) for u in uids.values() if u}
    return sorted(keys)


@event.listens_for(Session, "after_soft_rollback")
def _forget(session: Session, _previous: Any) -> None:
    """Drop the memo of list-state rows after any rollback, a savepoint's included: rows made
    or changed inside it are gone or stale, and the next use reads them again."""
    session.info.pop(_MEMO, None)


def _state(session: Session, device_pk: int, name: str) -> DeviceListState:
    """The device's state row for list ``name``, created on first use (:func:`_states`)."""
    memo: dict[tuple[int, str], DeviceListState] = session.info.setdefault(_MEMO, {})
    if (device_pk, name) not in memo:
        _states(session, [device_pk], name)
    return memo[(device_pk, name)]


def _states(session: Session, device_pks: Iterable[int], name: str) -> None:
    """Put the state rows of ``device_pks`` for list ``name`` in the session's memo: one read,
    and for those that have none yet one insert (conflicts ignored) and a second read. The
    bridge's workers and its list publisher may meet a new device at once: the insert that
    loses the race inserts nothing, and the second read finds the winner's row. Rows of the
    current tenant."""
    memo: dict[tuple[int, str], DeviceListState] = session.info.setdefault(_MEMO, {})
    wanted = sorted({pk for pk in device_pks if (pk, name) not in memo})
    if not wanted:
        return
    _read_states(session, wanted, name, memo)
    missing = [pk for pk in wanted if (pk, name) not in memo]
    if not missing:
        return
    tid = require_tenant_id()
    rows = [
        {"tenant_id": tid, "device_pk": pk, "list_name": name, "applied_version": 0,
         "sent_version": 0}
        for pk in missing
    ]  # fmt: skip
    dialect_insert = pg_insert if is_postgres(session) else sqlite_insert
    session.execute(
        dialect_insert(DeviceListState).on_conflict_do_nothing(
            index_elements=["device_pk", "list_name"]
        ),
        rows,
    )
    _read_states(session, missing, name, memo)


def _read_states(
    session: Session,
    device_pks: list[int],
    name: str,
    memo: dict[tuple[int, str], DeviceListState],
) -> None:
    for st in session.scalars(
        select(DeviceListState).where(
            DeviceListState.device_pk.in_(device_pks), DeviceListState.list_name == name
        )
    ):
        memo[(st.device_pk, name)] = st


def updates_for(
    session: Session, device_pk: int, device_id: str, *, now: datetime
) -> list[ListUpdate]:
    """What the device needs to catch up on its lists; marks it as sent (caller commits)."""
    return updates_for_many(session, [(device_pk, device_id)], now=now)[device_pk]


def updates_for_many(
    session: Session, devices: Sequence[tuple[int, str]], *, now: datetime
) -> dict[int, list[ListUpdate]]:
    """:func:`updates_for` of several ``(pk, device id)`` devices of the current tenant: their
    state rows in one read, each delta built once per starting version (a reconnect storm's
    hellos, handled together)."""
    _states(session, [pk for pk, _d in devices], BLACKLIST)
    current = blacklist.current_version(session)
    states = [(d, _state(session, pk, BLACKLIST)) for pk, d in devices]
    behind = [(d, st) for d, st in states if st.sent_version < current]
    caught = _catch_up(session, behind, current, now)
    return {pk: caught.get(d, []) for pk, d in devices}


def _catch_up(
    session: Session, behind: Sequence[tuple[str, DeviceListState]], current: int, now: datetime
) -> dict[str, list[ListUpdate]]:
    """What each ``(device id, state row)`` behind ``current`` needs (a delta from what it
    applied, or a snapshot when that is smaller); marks them as sent (caller flushes)."""
    out: dict[str, list[ListUpdate]] = {}
    deltas: dict[int, ListDelta | None] = {}
    for device_id, st in behind:
        base = st.applied_version
        st.sent_version, st.sent_at = current, now
        if current - base > SNAPSHOT_AFTER:
            out[device_id] = _snapshot(session, device_id)
            continue
        if base not in deltas:
            deltas[base] = _delta(session, base)
        delta = deltas[base]
        out[device_id] = [] if delta is None else [ListUpdate(device_id, delta)]
    return out


def _snapshot(session: Session, device_id: str) -> list[ListUpdate]:
    version, cards = blacklist.snapshot(session)
    chunks = snapshot_chunks(BLACKLIST, version, card_keys(session, cards))
    return [ListUpdate(device_id, chunk) for chunk in chunks]


def due_updates(session: Session, *, now: datetime) -> list[tuple[int, ListUpdate]]:
    """``(tenant id, update)`` for every online device behind on a list, across tenants.

    One query finds the tenants with online devices; per tenant one query finds the devices
    behind (joined with their list state) and the delta is built once per starting version.
    """
    from onecard.platform.db.tenancy import tenant_scope

    with unscoped(reason="list distributor walks every tenant with online devices"):
        tenants = sorted(
            set(session.scalars(select(Device.tenant_id).where(Device.online, Device.enabled)))
        )
    out: list[tuple[int, ListUpdate]] = []
    for tid in tenants:
        with tenant_scope(tid):
            out += [(tid, u) for u in _tenant_updates(session, now)]
    return out


def _tenant_updates(session: Session, now: datetime) -> list[ListUpdate]:
    current = blacklist.current_version(session)
    # A device without a state row has not said hello yet: its hello creates the row and is
    # answered with what it lacks. Creating rows here too raced the bridge workers' hellos
    # (two transactions inserting the same keys in different orders deadlock).
    rows = _behind(session, current)
    if not rows:
        return []
    caught = _catch_up(session, [(device_id, st) for _pk, device_id, st in rows], current, now)
    session.flush()
    return [u for updates in caught.values() for u in updates]


def _behind(session: Session, current: int) -> list[Any]:
    """Online devices whose state row is behind ``current``, those rows locked.

    Rows another transaction holds (a bridge worker handling the device's hello or heartbeat)
    are skipped, not waited for: the next round sends to them. Waiting would deadlock with a
    worker's transaction that touches several devices' rows in another order."""
    stmt = (
        select(Device.id, Device.device_id, DeviceListState)
        .join(DeviceListState, DeviceListState.device_pk == Device.id)
        .where(Device.online, Device.enabled, DeviceListState.list_name == BLACKLIST)
        .where(DeviceListState.sent_version < current)
        .order_by(Device.id)
        .with_for_update(skip_locked=True, of=DeviceListState)
    )
    return list(session.execute(stmt).all())


def _delta(session: Session, base: int) -> ListDelta | None:
    d = blacklist.delta(session, base, limit=SNAPSHOT_AFTER)
    if d.to_version <= base:
        return None
    return ListDelta(
        list=BLACKLIST,
        from_=base,
        to=d.to_version,
        add=tuple(card_keys(session, d.add)),
        remove=tuple(card_keys(session, d.remove)),
    )


def device_reports(
    session: Session, device_pk: int, versions: dict[str, int], *, now: datetime, receipt: bool
) -> None:
    """A device holds ``versions`` (hello, heartbeat or receipt): record what it applied.

    A hello or a stale heartbeat also rewinds ``sent_version`` so the distributor resends what
    the device evidently did not get.
    """
    _report(session, device_pk, versions, now=now, receipt=receipt)
    session.flush()


def _report(
    session: Session, device_pk: int, versions: dict[str, int], *, now: datetime, receipt: bool
) -> None:
    for name, version in versions.items():
        if name != BLACKLIST or version < 0:
            continue
        st = _state(session, device_pk, name)
        if version > st.applied_version:
            st.applied_version, st.applied_at = version, now
            session.add(
                DeviceListReceipt(
                    device_pk=device_pk, list_name=name, version=version, received_at=now
                )
            )
        stale = st.sent_at is None or now - st.sent_at >= RESEND_AFTER
        if not receipt and (stale or version < st.applied_version):
            st.sent_version = min(st.sent_version, version)


def device_gap(session: Session, device_pk: int, name: str, held: int, *, now: datetime) -> None:
    """The device could not apply what came (``gap`` receipt): it holds ``held``, resend."""
    if name != BLACKLIST:
        return
    st = _state(session, device_pk, name)
    st.applied_version = st.sent_version = max(held, 0)
    st.sent_at = now
    session.flush()


def rewind_many(session: Session, held: dict[int, dict[str, int]], *, now: datetime) -> None:
    """After a (re)connect each device of ``{pk: versions}`` (current tenant) holds those
    versions (it may have lost its store): the distributor sends from there. Their state rows
    are read together and written in one flush."""
    _states(session, held, BLACKLIST)
    for device_pk, versions in held.items():
        _report(session, device_pk, versions, now=now, receipt=True)
        st = _state(session, device_pk, BLACKLIST)
        st.applied_version = st.sent_version = max(versions.get(BLACKLIST, 0), 0)
    session.flush()


@dataclass(frozen=True)
class Protection:
    """Whether one device applied a card's blacklist change."""

    device_id: str
    online: bool
    applied_version: int
    protected: bool
    applied_at: datetime | None


def card_protection(session: Session, card_id: int) -> tuple[int | None, list[Protection]]:
    """The card's latest blacklist version and, per enabled device, whether it applied it."""
    change = session.scalar(
        select(BlacklistChange)
        .where(BlacklistChange.card_id == card_id)
        .order_by(BlacklistChange.version.desc())
        .limit(1)
    )
    if change is None:
        if not _card_exists(session, card_id):
            raise NotFound(f"card {card_id} not found")
        return None, []
    devices = list(session.scalars(select(Device).where(Device.enabled).order_by(Device.device_id)))
    states = {
        s.device_pk: s
        for s in session.scalars(
            select(DeviceListState).where(DeviceListState.list_name == BLACKLIST)
        )
    }
    out = []
    for d in devices:
        st = states.get(d.id)
        applied = st.applied_version if st else 0
        at = _first_receipt(session, d.id, change.version) if applied >= change.version else None
        out.append(Protection(d.device_id, d.online, applied, applied >= change.version, at))
    return change.version, out


def _card_exists(session: Session, card_id: int) -> bool:
    from onecard.platform.cards.models import Card

    return session.get(Card, card_id) is not None


def _first_receipt(session: Session, device_pk: int, version: int) -> datetime | None:
    return session.scalar(
        select(DeviceListReceipt.received_at)
        .where(
            DeviceListReceipt.device_pk == device_pk,
            DeviceListReceipt.list_name == BLACKLIST,
            DeviceListReceipt.version >= version,
        )
        .order_by(DeviceListReceipt.version)
        .limit(1)
    )
