"""The live monitor's Socket.IO side: namespace ``/live``, tenant rooms, poll-and-push.

Server: Flask-SocketIO in ``threading`` mode with simple-websocket (no eventlet/gevent); the
console page connects with the vendored socket.io-client. Who may connect: a browser with a
valid console login (the same session cookie and checks as the pages) whose operator holds
``devices.view``; the socket joins the rooms of that tenant only, so a tenant never receives
another tenant's events. The engine.io default same-origin check refuses cross-site connects
(no cross-site WebSocket hijacking with the session cookie).

Where events come from: the platform side (bridge, tap decisions) does not emit. A background
task in the web process polls, for each tenant that has a connected operator, every
``INTERVAL`` seconds: ``device_taps`` above an :class:`~onecard.web.alarms.IdWatermark`
(primary-key range scan), and every alarm source (:mod:`onecard.web.alarms`): the core's device
state and health, and those modules register through ``onecard_socketio_namespaces``.

Events: ``tap`` ``{id, at, device, kind, card, allow, reason, amount}`` (card number masked to
its last four characters) and ``alarm`` (:meth:`~onecard.web.alarms.Alarm.event`).

Several web processes: with ``[web] message_queue = "redis://..."`` every emit goes through
Redis, so an event emitted by any process (to :func:`room`) reaches the tenant's consoles on
all of them. Each process still polls for its own sockets only, and emits what it polled to its
own room of the tenant (:meth:`Poller.local_room`): the queue delivers that to this process's
sockets alone, so no console sees an event twice. The queue's channel is named after the
deployment's secret key (:func:`channel_of`): deployments that share a Redis stay apart.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import Flask, request, session
from flask_socketio import Namespace, SocketIO, join_room
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard.config import Settings
from onecard.platform.clock import utcnow
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices.models import Device, DeviceTap
from onecard.platform.errors import PluginError
from onecard.platform.registry import Registry
from onecard.platform.tenants.services import enabled_module_keys
from onecard.web.alarms import CORE_SOURCES, Alarm, AlarmSource, IdWatermark, mask
from onecard.web.state import state

log = logging.getLogger(__name__)

NAMESPACE = "/live"
PERMISSION = "devices.view"
INTERVAL = 0.5


def room(tenant_id: int) -> str:
    """The room of every console of a tenant, on every web process."""
    return f"t{tenant_id}"


def channel_of(settings: Settings) -> str:
    """The message queue channel of this deployment: its processes share the secret key."""
    digest = hashlib.sha256(b"onecard live channel\0" + settings.security.secret_key.encode())
    return f"onecard-live-{digest.hexdigest()[:16]}"


@dataclass
class _Watch:
    """Where the poller is for one tenant: its taps, and each alarm source's cursor."""

    taps: IdWatermark
    cursors: dict[int, Any] = field(default_factory=dict)  # index in Poller.sources -> cursor


class Poller:
    """Reads the new taps and alarms of subscribed tenants and emits them to their rooms."""

    def __init__(
        self, app: Flask, sio: SocketIO, sources: Sequence[AlarmSource] = CORE_SOURCES
    ) -> None:
        self.app, self.sio, self.sources = app, sio, tuple(sources)
        self.process = uuid.uuid4().hex[:12]
        self.clients: dict[str, int] = {}  # socket id -> tenant id
        self.marks: dict[int, _Watch] = {}
        self.lock = threading.Lock()
        self.started = False
        self.stopped = threading.Event()

    def local_room(self, tenant_id: int) -> str:
        """The room of a tenant's consoles connected to this process (what it polls for)."""
        return f"{room(tenant_id)}.{self.process}"

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

    def _baseline(self, tenant_id: int) -> _Watch:
        now = utcnow()
        with state(self.app).sessions() as s, tenant_scope(tenant_id):
            watch = _Watch(IdWatermark(s.scalar(select(func.max(DeviceTap.id))) or 0))
            enabled = self._enabled(s)
            for n, source in enumerate(self.sources):
                if source.module is None or source.module in enabled:
                    watch.cursors[n] = source.start(s, now)
        return watch

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
        with self.lock:
            tenants = list(self.marks.items())
        for tenant_id, watch in tenants:
            to = self.local_room(tenant_id)
            with self.app.app_context(), state(self.app).sessions() as s, tenant_scope(tenant_id):
                for event in self._taps(s, watch.taps):
                    self.sio.emit("tap", event, to=to, namespace=NAMESPACE)
                for alarm in self._alarms(s, watch, utcnow()):
                    self.sio.emit("alarm", alarm.event(), to=to, namespace=NAMESPACE)

    def _taps(self, s: Session, mark: IdWatermark) -> list[dict[str, Any]]:
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
            .where(DeviceTap.id > mark.low)
            .order_by(DeviceTap.id)
            .limit(mark.scan)
        ).all()
        out = [_tap_event(r) for r in rows if mark.take(r.id)]
        mark.forget_old()
        return out

    def _alarms(self, s: Session, watch: _Watch, now: datetime) -> list[Alarm]:
        enabled = self._enabled(s)
        alarms: list[Alarm] = []
        for n, source in enumerate(self.sources):
            if source.module is not None and source.module not in enabled:
                watch.cursors.pop(n, None)  # switched off: start afresh if it comes back
                continue
            if n not in watch.cursors:
                watch.cursors[n] = source.start(s, now)
                continue
            alarms.extend(self._poll(s, n, source, watch, now))
        return alarms

    @staticmethod
    def _poll(
        s: Session, n: int, source: AlarmSource, watch: _Watch, now: datetime
    ) -> Sequence[Alarm]:
        # A savepoint per source: one that fails (a module's bug, a timeout) leaves the
        # session usable for the others and keeps its cursor, so it is asked again next time.
        try:
            with s.begin_nested():
                found, watch.cursors[n] = source.poll(s, watch.cursors[n], now)
        except Exception:
            log.exception("live alarm source %s failed", type(source).__name__)
            return []
        return found

    def _enabled(self, s: Session) -> frozenset[str]:
        if all(source.module is None for source in self.sources):
            return frozenset()
        return enabled_module_keys(s)


def _tap_event(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "at": r.decided_at.isoformat(),
        "device": r.device_id,
        "kind": r.kind,
        "card": mask(r.card_no),
        "allow": bool(r.allow),
        "reason": r.reason,
        "amount": None if r.amount_fen is None else f"{r.amount_fen / 100:.2f}",
    }


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


def module_contributions(registry: Registry) -> tuple[list[AlarmSource], list[Namespace]]:
    """What modules return from ``onecard_socketio_namespaces``: alarm sources for ``/live``
    and Socket.IO namespaces of their own. Anything else fails the boot."""
    sources: list[AlarmSource] = []
    namespaces: list[Namespace] = []
    for batch in registry.pm.hook.onecard_socketio_namespaces():
        for item in batch or ():
            if isinstance(item, Namespace):
                namespaces.append(item)
            elif isinstance(item, AlarmSource):
                sources.append(item)
            else:
                raise PluginError(f"{item!r} is neither a Socket.IO namespace nor an alarm source")
    return sources, namespaces


def socketio_of(app: Flask) -> SocketIO:
    """The Socket.IO server of ``app`` (``socketio_of(app).run(app, ...)`` serves both)."""
    sio: SocketIO = app.extensions["socketio"]
    return sio


def init_live(app: Flask) -> SocketIO:
    """Attach a Socket.IO server (threading mode; through the message queue when one is
    configured) with the ``/live`` handlers and the modules' namespaces to ``app``."""
    st = state(app)
    socketio = SocketIO(
        app,
        async_mode="threading",
        message_queue=st.settings.web.message_queue or None,
        channel=channel_of(st.settings),
    )
    sources, namespaces = module_contributions(st.registry)
    for namespace in namespaces:
        socketio.on_namespace(namespace)
    poller = Poller(app, socketio, (*CORE_SOURCES, *sources))
    app.extensions["onecard.live"] = poller

    @socketio.on("connect", namespace=NAMESPACE)
    def _connect(_auth: Any = None) -> bool:
        tenant_id = _operator_tenant()
        if tenant_id is None:
            return False  # refused: the client sees connect_error
        sid: str = request.sid  # type: ignore[attr-defined]
        join_room(room(tenant_id))
        join_room(poller.local_room(tenant_id))
        poller.subscribe(sid, tenant_id)
        session.modified = False
        return True

    @socketio.on("disconnect", namespace=NAMESPACE)
    def _disconnect(*_args: Any) -> None:
        poller.unsubscribe(request.sid)  # type: ignore[attr-defined]

    return socketio
