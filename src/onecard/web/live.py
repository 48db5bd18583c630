"""The live monitor's Socket.IO side: namespace ``/live``, one room per tenant, poll-and-push.

Server: Flask-SocketIO in ``threading`` mode with simple-websocket (no eventlet/gevent); the
console page connects with the vendored socket.io-client. Who may connect: a browser with a
valid console login (the same session cookie and checks as the pages) whose operator holds
``devices.view``; the socket joins the room of that tenant only (``t<tenant id>``), so a tenant
never receives another tenant's events. The engine.io default same-origin check refuses
cross-site connects (no cross-site WebSocket hijacking with the session cookie).

Where events come from: the platform side (bridge, tap decisions) does not emit. A background
task in the web process polls, for each tenant that has a connected operator, every
``INTERVAL`` seconds:

* ``device_taps`` with ``id`` above a watermark (``ORDER BY id LIMIT BATCH``, primary-key range
  scan). Ids are taken when a row is inserted but become visible at commit, so a lower id may
  commit after a higher one: the query starts ``LOOKBACK`` ids below the watermark and skips the
  ids already pushed, which catches those late commits at the cost of a slightly wider scan.
* devices whose ``state_changed_at`` moved since the last poll (online/offline alarms);
* every ``HEALTH_EVERY`` polls, :func:`health.assess` of the devices heard from since the last
  assessment (at most ``HEALTH_BATCH``): alert codes not seen before for that device are pushed.

Events: ``tap`` ``{id, at, device, kind, card, allow, reason, amount}`` (card number masked to
its last four characters) and ``alarm`` ``{at, device, code, severity, message}``.

One web process is assumed (Socket.IO state is per process). With several processes each polls
for its own clients; a Redis message queue (``SocketIO(message_queue=...)``) and an emitter in
the bridge are the next step and not needed now.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, request, session
from flask_socketio import SocketIO, join_room
from sqlalchemy import func, or_, select

from onecard.platform.clock import utcnow
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices import health
from onecard.platform.devices.models import Device, DeviceTap
from onecard.web.state import state

log = logging.getLogger(__name__)

NAMESPACE = "/live"
PERMISSION = "devices.view"
INTERVAL = 0.5
BATCH = 200
LOOKBACK = 64
HEALTH_EVERY = 20
HEALTH_BATCH = 50


def room(tenant_id: int) -> str:
    """The room of a tenant's live events."""
    return f"t{tenant_id}"


def mask(card_no: str | None) -> str:
    """A card number reduced to its last four characters."""
    return "•••• " + card_no[-4:] if card_no else ""


@dataclass
class _Mark:
    """Where the poller is for one tenant."""

    tap_id: int
    pushed: set[int] = field(default_factory=set)
    since: datetime = field(default_factory=utcnow)
    online: dict[int, bool] = field(default_factory=dict)
    alerts: dict[int, frozenset[str]] = field(default_factory=dict)
    assessed: datetime = field(default_factory=utcnow)


class Poller:
    """Reads new taps and device changes of subscribed tenants and emits them to their rooms."""

    def __init__(self, app: Flask, sio: SocketIO) -> None:
        self.app, self.sio = app, sio
        self.clients: dict[str, int] = {}  # socket id -> tenant id
        self.marks: dict[int, _Mark] = {}
        self.lock = threading.Lock()
        self.started = False
        self.stopped = threading.Event()
        self.ticks = 0

    def subscribe(self, sid: str, tenant_id: int) -> None:
        """A socket of ``tenant_id`` joined; start the task on first use."""
        with self.lock:
            self.clients[sid] = tenant_id
            if tenant_id not in self.marks:
                self.marks[tenant_id] = self._baseline(tenant_id)
            if not self.started:
                self.started = True
                self.sio.start_background_task(self.run)

    def unsubscribe(self, sid: str) -> None:
        """A socket left; forget a tenant nobody watches any more."""
        with self.lock:
            tenant_id = self.clients.pop(sid, None)
            if tenant_id is not None and tenant_id not in self.clients.values():
                self.marks.pop(tenant_id, None)

    def _baseline(self, tenant_id: int) -> _Mark:
        with state(self.app).sessions() as s, tenant_scope(tenant_id):
            top = s.scalar(select(func.max(DeviceTap.id))) or 0
            online = {pk: on for pk, on in s.execute(select(Device.id, Device.online))}
        return _Mark(tap_id=top, online=online)

    def run(self) -> None:
        """The loop (a background task of the Socket.IO server)."""
        while not self.stopped.is_set():
            try:
                self.tick()
            except Exception:  # the loop must survive a database hiccup
                log.exception("live monitor poll failed")
            self.sio.sleep(INTERVAL)

    def tick(self) -> None:
        """One poll of every subscribed tenant."""
        self.ticks += 1
        with self.lock:
            tenants = list(self.marks.items())
        for tenant_id, mark in tenants:
            with self.app.app_context(), state(self.app).sessions() as s, tenant_scope(tenant_id):
                for event in self._taps(s, mark):
                    self.sio.emit("tap", event, to=room(tenant_id), namespace=NAMESPACE)
                for event in self._states(s, mark):
                    self.sio.emit("alarm", event, to=room(tenant_id), namespace=NAMESPACE)
                if self.ticks % HEALTH_EVERY == 0:
                    for event in self._health(s, mark):
                        self.sio.emit("alarm", event, to=room(tenant_id), namespace=NAMESPACE)

    def _taps(self, s: Any, mark: _Mark) -> list[dict[str, Any]]:
        low = max(0, mark.tap_id - LOOKBACK)
        rows = s.execute(
            select(
                DeviceTap.id,
                DeviceTap.decided_at,
                DeviceTap.card_no,
                DeviceTap.allow,
                DeviceTap.reason,
                DeviceTap.amount_fen,
                Device.device_id,
                Device.kind,
            )
            .join(Device, Device.id == DeviceTap.device_pk)
            .where(DeviceTap.id > low)
            .order_by(DeviceTap.id)
            .limit(BATCH + LOOKBACK)
        ).all()
        out = []
        for r in rows:
            if r.id in mark.pushed or r.id <= low:
                continue
            mark.pushed.add(r.id)
            mark.tap_id = max(mark.tap_id, r.id)
            out.append(
                {
                    "id": r.id,
                    "at": r.decided_at.isoformat(),
                    "device": r.device_id,
                    "kind": r.kind,
                    "card": mask(r.card_no),
                    "allow": bool(r.allow),
                    "reason": r.reason,
                    "amount": None if r.amount_fen is None else f"{r.amount_fen / 100:.2f}",
                }
            )
        floor = mark.tap_id - LOOKBACK
        mark.pushed = {i for i in mark.pushed if i > floor}
        return out

    def _states(self, s: Any, mark: _Mark) -> list[dict[str, Any]]:
        since, mark.since = mark.since - timedelta(seconds=1), utcnow()
        rows = s.execute(
            select(Device.id, Device.device_id, Device.online, Device.state_changed_at).where(
                Device.state_changed_at >= since
            )
        ).all()
        out = []
        for r in rows:
            if mark.online.get(r.id) == r.online:
                continue
            mark.online[r.id] = r.online
            out.append(
                {
                    "at": (r.state_changed_at or utcnow()).isoformat(),
                    "device": r.device_id,
                    "code": "online" if r.online else "offline",
                    "severity": "info" if r.online else "critical",
                    "message": "device is online" if r.online else "device is offline",
                }
            )
        return out

    def _health(self, s: Any, mark: _Mark) -> list[dict[str, Any]]:
        since, now = mark.assessed, utcnow()
        devices = list(
            s.scalars(
                select(Device)
                .where(or_(Device.last_seen_at >= since, Device.state_changed_at >= since))
                .order_by(Device.last_seen_at)
                .limit(HEALTH_BATCH)
            )
        )
        mark.assessed = now
        out = []
        for d in devices:
            h = health.assess(s, d, now=now)
            codes = frozenset(a.code for a in h.alerts if a.code != "offline")
            new = codes - mark.alerts.get(d.id, frozenset())
            mark.alerts[d.id] = codes
            out.extend(
                {
                    "at": now.isoformat(),
                    "device": d.device_id,
                    "code": a.code,
                    "severity": a.severity,
                    "message": a.message,
                }
                for a in h.alerts
                if a.code in new
            )
        return out


def _operator_tenant() -> int | None:
    """The tenant of the console login behind this socket, if its operator may watch."""
    from onecard.platform.db.tenancy import tenant_scope as scope
    from onecard.web.console.core import LoginRequired, _active_login, _load

    entry = _active_login(utcnow())
    if entry is None:
        return None
    with state().sessions() as s:
        try:
            tenant, _op, actor, _site = _load(s, entry)
        except LoginRequired:
            return None
        with scope(tenant.id):
            if PERMISSION not in actor.permissions and "*" not in actor.permissions:
                return None
        return tenant.id


def socketio_of(app: Flask) -> SocketIO:
    """The Socket.IO server of ``app`` (``socketio_of(app).run(app, ...)`` serves both)."""
    sio: SocketIO = app.extensions["socketio"]
    return sio


def init_live(app: Flask) -> SocketIO:
    """Attach a Socket.IO server (threading mode) with the ``/live`` handlers to ``app``."""
    socketio = SocketIO(app, async_mode="threading")
    poller = Poller(app, socketio)
    app.extensions["onecard.live"] = poller

    @socketio.on("connect", namespace=NAMESPACE)
    def _connect(_auth: Any = None) -> bool:
        tenant_id = _operator_tenant()
        if tenant_id is None:
            return False  # refused: the client sees connect_error
        sid: str = request.sid  # type: ignore[attr-defined]
        join_room(room(tenant_id))
        poller.subscribe(sid, tenant_id)
        session.modified = False
        return True

    @socketio.on("disconnect", namespace=NAMESPACE)
    def _disconnect(*_args: Any) -> None:
        poller.unsubscribe(request.sid)  # type: ignore[attr-defined]

    return socketio
