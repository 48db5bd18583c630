"""Device state from hello, heartbeat and last will, and health alerts that warn early.

:func:`assess` turns the stored heartbeats into alerts *before* trouble: storage that will be
full within days at the current fill rate, unsent records piling up, lists or configuration
behind, a clock drifting beyond tolerance, gaps in the records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from sqlalchemy import Boolean, bindparam, case, select, update
from sqlalchemy.orm import Session

from onecard.platform.cards import blacklist
from onecard.platform.devices import ingest, lists
from onecard.platform.devices.models import Device, DeviceHeartbeat, DeviceListState
from onecard.platform.devices.wire import BLACKLIST, Heartbeat, Hello


@dataclass(frozen=True)
class HealthPolicy:
    """Thresholds of the early warnings."""

    storage_days_warn: float = 7.0
    storage_fill_warn: float = 0.8
    unsent_warn: int = 1000
    list_lag_grace: timedelta = timedelta(minutes=5)
    clock_tolerance_ms: int = 2000
    trend_window: timedelta = timedelta(days=3)


@dataclass(frozen=True)
class Alert:
    """One finding: ``code`` is stable, ``message`` is for the operator."""

    code: str
    severity: str  # "warning" | "critical"
    message: str


@dataclass(frozen=True)
class Health:
    """A device's health: ``ok`` | ``warning`` | ``critical`` with the alerts behind it."""

    device_id: str
    status: str
    online: bool
    alerts: tuple[Alert, ...]


def on_hellos(session: Session, hellos: Sequence[tuple[int, Hello]], *, now: datetime) -> None:
    """(Re)connects of ``(pk, hello)`` devices of the current tenant: each is online and holds
    what its hello says. One UPDATE by primary key for all of them (an ``executemany``), and
    their list states rewound to what they hold (:func:`lists.rewind_many`)."""
    session.execute(
        update(Device).execution_options(synchronize_session=False),
        [
            {
                "id": pk,
                "online": True,
                "state_changed_at": now,
                "last_seen_at": now,
                "firmware": hello.firmware,
                "epoch": hello.epoch,
                "config_version": hello.config_version,
            }
            for pk, hello in sorted(hellos, key=lambda h: h[0])  # one lock order for all
        ],
    )
    lists.rewind_many(session, {pk: dict(hello.lists) for pk, hello in hellos}, now=now)


def on_state(session: Session, device_pk: int, online: bool, *, now: datetime) -> None:
    """``state`` topic: ``online`` on connect, ``offline`` from the last will (one UPDATE;
    ``state_changed_at`` moves only when the state does; ``last_seen_at`` only when online)."""
    on_states(session, [(device_pk, online)], now=now)


_ONLINE = bindparam("online", type_=Boolean)
_NOW = bindparam("now", type_=Device.last_seen_at.type)
_STATE = (  # run on the session's connection: a Core executemany, no ORM bookkeeping
    update(Device)
    .where(Device.id == bindparam("pk"))
    .values(
        online=_ONLINE,
        state_changed_at=case((Device.online == _ONLINE, Device.state_changed_at), else_=_NOW),
        last_seen_at=case((_ONLINE, _NOW), else_=Device.last_seen_at),
    )
)


def on_states(session: Session, states: Sequence[tuple[int, bool]], *, now: datetime) -> None:
    """:func:`on_state` of several ``(pk, online)`` devices: one ``executemany`` (devices the
    bridge resolved; in the order of their keys, one lock order for all)."""
    if states:
        params = [{"pk": pk, "online": online, "now": now} for pk, online in sorted(states)]
        session.connection().execute(_STATE, params)


def on_heartbeat(session: Session, device: Device, hb: Heartbeat, *, now: datetime) -> None:
    """Store the heartbeat and what it says about lists, config and clock."""
    device.online, device.last_seen_at, device.last_heartbeat_at = True, now, now
    total = None if hb.storage_free is None else hb.storage_used + hb.storage_free
    device.unsent, device.reader_state = hb.unsent, hb.reader.value
    device.storage_used, device.storage_total = hb.storage_used, total
    device.config_version = hb.config_version
    if hb.clock_offset_ms is not None:
        # the device's offset is what to add to its clock (platform − device); keep that sign
        device.clock_offset_ms = hb.clock_offset_ms
    if hb.rtt_ms is not None:
        device.round_trip_ms = hb.rtt_ms
    session.add(
        DeviceHeartbeat(
            device_pk=device.id,
            received_at=now,
            unsent=hb.unsent,
            storage_used=hb.storage_used,
            storage_total=total,
            clock_offset_ms=hb.clock_offset_ms,
            data={
                "lists": dict(hb.lists),
                "reader": hb.reader.value,
                "epoch": hb.epoch,
                "max_seq": hb.max_seq,
                "clock_valid": hb.clock_valid,
            },
        )
    )
    lists.device_reports(session, device.id, dict(hb.lists), now=now, receipt=False)
    session.flush()


def assess(
    session: Session, device: Device, *, now: datetime, policy: HealthPolicy | None = None
) -> Health:
    """Alerts for ``device`` at ``now``."""
    p = policy or HealthPolicy()
    beats = list(
        session.scalars(
            select(DeviceHeartbeat)
            .where(
                DeviceHeartbeat.device_pk == device.id,
                DeviceHeartbeat.received_at >= now - p.trend_window,
            )
            .order_by(DeviceHeartbeat.received_at)
        )
    )
    alerts = [
        *_storage(beats, p),
        *_unsent(beats, p),
        *_lag(session, device, now, p),
        *_clock(device, p),
        *_gaps(session, device),
    ]
    if not device.online:
        alerts.insert(0, Alert("offline", "critical", "device is offline"))
    status = "ok"
    if alerts:
        status = "critical" if any(a.severity == "critical" for a in alerts) else "warning"
    return Health(device.device_id, status, device.online, tuple(alerts))


def _storage(beats: list[DeviceHeartbeat], p: HealthPolicy) -> list[Alert]:
    if not beats:
        return []
    last = beats[-1]
    if last.storage_total is None:
        return []
    free = last.storage_total - last.storage_used
    out = []
    if last.storage_used >= p.storage_fill_warn * last.storage_total:
        pct = 100 * last.storage_used // last.storage_total
        out.append(
            Alert("storage_full", "critical" if free <= 0 else "warning", f"storage {pct}% used")
        )
    first = beats[0]
    days = (last.received_at - first.received_at).total_seconds() / 86400
    if days > 0 and last.storage_used > first.storage_used and free > 0:
        rate = (last.storage_used - first.storage_used) / days
        left = free / rate
        if left < p.storage_days_warn:
            out.append(
                Alert(
                    "storage_filling",
                    "warning",
                    f"storage full in {left:.1f} days at the current rate",
                )
            )
    return out


def _unsent(beats: list[DeviceHeartbeat], p: HealthPolicy) -> list[Alert]:
    if not beats:
        return []
    tail = [b.unsent for b in beats[-4:]]
    growing = len(tail) >= 3 and all(a < b for a, b in pairwise(tail))
    if growing or tail[-1] >= p.unsent_warn:
        return [Alert("unsent_growing", "warning", f"{tail[-1]} records not yet uploaded")]
    return []


def _lag(session: Session, device: Device, now: datetime, p: HealthPolicy) -> list[Alert]:
    out = []
    current = blacklist.current_version(session)
    st = session.scalar(
        select(DeviceListState).where(
            DeviceListState.device_pk == device.id, DeviceListState.list_name == BLACKLIST
        )
    )
    applied = st.applied_version if st else 0
    since = (st.sent_at if st else None) or device.created_at
    if applied < current and now - since >= p.list_lag_grace:
        out.append(Alert("list_lag", "warning", f"blacklist at {applied} of {current}"))
    if device.config_published > device.config_version:
        out.append(
            Alert(
                "config_lag",
                "warning",
                f"config at {device.config_version} of {device.config_published}",
            )
        )
    return out


def _clock(device: Device, p: HealthPolicy) -> list[Alert]:
    off = device.clock_offset_ms
    if off is not None and abs(off) > p.clock_tolerance_ms:
        return [Alert("clock_offset", "warning", f"clock off by {off} ms")]
    return []


def _gaps(session: Session, device: Device) -> list[Alert]:
    out = []
    for gap in ingest.gaps(session, device.id):
        if gap.missing:
            n = sum(b - a + 1 for a, b in gap.missing)
            out.append(
                Alert("records_missing", "warning", f"epoch {gap.epoch}: {n} records missing")
            )
    return out
