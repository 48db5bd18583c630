"""Alarms of the live monitor: what one is, where they come from, and how a source keeps its
place.

An :class:`AlarmSource` reports the new alarms of one tenant each time the live monitor's
poller asks (:mod:`onecard.web.live`). The core has two: device state changes (online/offline)
and device health (:func:`onecard.platform.devices.health.assess`). A module adds its own by
returning a source from its ``onecard_socketio_namespaces`` hook implementation (the hook of
live console panels; a returned ``flask_socketio.Namespace`` is mounted as it is): the canteen,
for instance, reports the reconciliation cases it opens. A module's source is asked only for
tenants that have the module switched on, always inside that tenant's scope, so it cannot see
another tenant's rows.

Sources hold no per-tenant state themselves: :meth:`AlarmSource.start` returns a cursor (where
"new" begins for one tenant), the poller keeps it, and :meth:`AlarmSource.poll` returns the new
alarms with the next cursor. :class:`IdWatermark` is the cursor of a source that reads an
append-only table by id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from onecard.platform.devices import health
from onecard.platform.devices.models import Device

SEVERITIES = ("info", "warning", "critical")
# Ids are taken when a row is inserted but become visible at commit, so a lower id may commit
# after a higher one: a watermark re-reads this many ids below its top.
LOOKBACK = 64
BATCH = 200


def mask(card_no: str | None) -> str:
    """A card number reduced to its last four characters."""
    return "•••• " + card_no[-4:] if card_no else ""


@dataclass(frozen=True)
class Alarm:
    """One alarm as the ``alarm`` event of ``/live`` carries it.

    ``device`` is the device id the alarm is about (the monitor filters on it; empty when none
    is), ``code`` a stable name (``offline``, ``canteen.offline_overspend``), ``message`` the
    operator's text, ``source`` ``device`` for the core's alarms or the module key, ``card`` a
    card number already reduced by :func:`mask` (never a full card number).
    """

    at: datetime
    device: str
    code: str
    severity: str
    message: str
    source: str = "device"
    card: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")

    def event(self) -> dict[str, Any]:
        """The JSON body of the Socket.IO ``alarm`` event."""
        return {
            "at": self.at.isoformat(),
            "device": self.device,
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "source": self.source,
            "card": self.card,
        }


@runtime_checkable
class AlarmSource(Protocol):
    """Something that reports a tenant's new alarms to the live monitor.

    ``module`` is the key of the module the source belongs to (``None`` for the core's own):
    the poller asks a module's source only for tenants with that module switched on. Both
    methods run inside the tenant's scope with a session of their own; they must not write.
    """

    module: str | None

    def start(self, session: Session, now: datetime) -> Any:
        """The cursor of a tenant that starts being watched: alarms before ``now`` are old."""

    def poll(self, session: Session, cursor: Any, now: datetime) -> tuple[Sequence[Alarm], Any]:
        """The alarms after ``cursor`` (each reported once), and the cursor after them."""


@dataclass
class IdWatermark:
    """Where a poll of an id-ordered, append-only table is: every id up to ``top`` was seen.

    Because ids commit out of order, a scan starts :data:`LOOKBACK` ids below ``top``
    (:attr:`low`) and :meth:`take` skips the ids already reported, which catches a late commit
    at the cost of a slightly wider scan.
    """

    top: int
    seen: set[int] = field(default_factory=set)

    @property
    def low(self) -> int:
        """Scan ids above this."""
        return max(0, self.top - LOOKBACK)

    @property
    def scan(self) -> int:
        """How many rows one scan reads at most (:data:`BATCH` new ones plus the lookback)."""
        return BATCH + LOOKBACK

    def take(self, row_id: int) -> bool:
        """True the first time ``row_id`` is offered (report it); moves the watermark."""
        if row_id <= self.low or row_id in self.seen:
            return False
        self.seen.add(row_id)
        self.top = max(self.top, row_id)
        return True

    def forget_old(self) -> None:
        """Drop remembered ids that have fallen below the scan (call after each scan)."""
        floor = self.low
        self.seen = {i for i in self.seen if i > floor}


# ---- the core's sources -----------------------------------------------------------------------


@dataclass
class _States:
    since: datetime
    online: dict[int, bool]


class DeviceStateAlarms:
    """A device went offline (critical) or came back (info)."""

    module: str | None = None

    def start(self, session: Session, now: datetime) -> _States:
        """Remember every device's current state; only changes after ``now`` are alarms."""
        online = {pk: on for pk, on in session.execute(select(Device.id, Device.online))}
        return _States(since=now, online=online)

    def poll(self, session: Session, cursor: _States, now: datetime) -> tuple[list[Alarm], Any]:
        """Devices whose ``online`` differs from what was last reported."""
        # A second of overlap: state_changed_at is written by another process's clock.
        rows = session.execute(
            select(Device.id, Device.device_id, Device.online, Device.state_changed_at).where(
                Device.state_changed_at >= cursor.since - timedelta(seconds=1)
            )
        ).all()
        cursor.since = now
        alarms = [self._alarm(r, now) for r in rows if cursor.online.get(r.id) != r.online]
        cursor.online.update({r.id: r.online for r in rows})
        return alarms, cursor

    @staticmethod
    def _alarm(row: Any, now: datetime) -> Alarm:
        return Alarm(
            at=row.state_changed_at or now,
            device=row.device_id,
            code="online" if row.online else "offline",
            severity="info" if row.online else "critical",
            message="device is online" if row.online else "device is offline",
        )


@dataclass
class _Assessed:
    at: datetime
    alerts: dict[int, frozenset[str]] = field(default_factory=dict)


class DeviceHealthAlarms:
    """Health alerts (:func:`health.assess`) a device did not have at the last assessment.

    Assessing costs a few queries per device, so it runs every :attr:`period` and only for the
    devices heard from since (at most :attr:`batch`, least recently seen first).
    """

    module: str | None = None
    period = timedelta(seconds=10)
    batch = 50

    def start(self, session: Session, now: datetime) -> _Assessed:
        """Assess from ``now`` on."""
        return _Assessed(at=now)

    def poll(self, session: Session, cursor: _Assessed, now: datetime) -> tuple[list[Alarm], Any]:
        """New alerts of the devices seen since the last assessment (offline is not one:
        :class:`DeviceStateAlarms` reports it)."""
        if now - cursor.at < self.period:
            return [], cursor
        devices = session.scalars(
            select(Device)
            .where(or_(Device.last_seen_at >= cursor.at, Device.state_changed_at >= cursor.at))
            .order_by(Device.last_seen_at)
            .limit(self.batch)
        ).all()
        cursor.at = now
        alarms: list[Alarm] = []
        for device in devices:
            alarms.extend(self._new_alerts(session, device, cursor, now))
        return alarms, cursor

    @staticmethod
    def _new_alerts(
        session: Session, device: Device, cursor: _Assessed, now: datetime
    ) -> Iterable[Alarm]:
        alerts = [a for a in health.assess(session, device, now=now).alerts if a.code != "offline"]
        before = cursor.alerts.get(device.id, frozenset())
        cursor.alerts[device.id] = frozenset(a.code for a in alerts)
        return [
            Alarm(now, device.device_id, a.code, a.severity, a.message)
            for a in alerts
            if a.code not in before
        ]


CORE_SOURCES: tuple[AlarmSource, ...] = (DeviceStateAlarms(), DeviceHealthAlarms())
