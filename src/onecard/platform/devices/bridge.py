"""The platform's MQTT bridge: device messages in, decisions, acks, lists, configs out.

One paho 2.x client with a persistent MQTT 5 session (``clean_start=False`` + session expiry)
subscribes with shared subscriptions, so any number of bridges split the load and a restarted
bridge gets what arrived while it was down. Messages are acknowledged (PUBACK) only after their
unit of work committed and the answer was published: a bridge killed mid-batch loses nothing,
and ``(device, epoch, seq)`` / ``(device, req_id)`` make the redelivery change nothing.

Dispatch goes through a route table: the core routes below plus every module's
``onecard_mqtt_routes``. Nothing a device sends can crash the bridge: a bad message is counted
(``onecard_bridge_messages_total``), logged with the device id, and answered on ``down/cmd``
with an ``error`` command where the device expects a reply.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import Counter as PromCounter
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onecard.device_agents.protocol.codes import CommandName, ReasonCode
from onecard.device_agents.protocol.topics import (
    BRIDGE_SUBSCRIPTION,
    DEVICE_ID_RE,
    STATE_SUBSCRIPTION,
)
from onecard.platform.cards.models import BlacklistChange
from onecard.platform.clock import utcnow
from onecard.platform.db.tenancy import tenant_scope, unscoped
from onecard.platform.devices import bundles, commands, health, ingest, lists, services, taps
from onecard.platform.devices import clock as dclock
from onecard.platform.devices.bundles import DeviceKindSpec
from onecard.platform.devices.models import Device
from onecard.platform.devices.services import DeviceRef, resolve
from onecard.platform.devices.wire import (
    BadMessage,
    Command,
    CommandReceipt,
    ConfigReceipt,
    Heartbeat,
    Hello,
    ListReceipt,
    State,
    TapDecision,
    TapRequest,
    TimeRequest,
    Topic,
    decode,
    decode_records,
    encode,
    reference,
    topic,
    topic_for,
)
from onecard.platform.secrets import SecretBox
from onecard.platform.tenants.models import TenantModule

log = logging.getLogger(__name__)
SUBSCRIPTIONS = (
    BRIDGE_SUBSCRIPTION.removeprefix("$share/bridge/"),
    STATE_SUBSCRIPTION,
)  # each as $share/<group>/...
MESSAGES = PromCounter(
    "onecard_bridge_messages", "Device messages handled by the bridge", ["route", "outcome"]
)

Out = BaseModel  # a protocol message; its topic (and retain flag) follow from its type
CACHED_ROUTES = frozenset({"up/tap", "up/records"})  # routes that never change the device row
WAKE_ROUTES = frozenset({"state", "up/hello", "up/receipt"})  # may make list/command updates due


@dataclass(frozen=True)
class MqttRoute:
    """A module's route: ``suffix`` after ``oc/v1/{dev}/`` and a handler.

    The handler runs in the tenant's scope inside the bridge's unit of work and returns the
    protocol messages to publish to that device after commit (in order).
    """

    suffix: str
    handler: Callable[[RouteContext], Iterable[Out]]
    expects_reply: bool = False


@dataclass
class RouteContext:
    """What a route handler gets."""

    session: Session
    device: DeviceRef
    payload: bytes
    now: datetime
    bridge: Bridge
    after_commit: list[Callable[[], None]] = field(default_factory=list)


@dataclass(frozen=True)
class Connection:
    """How the bridge reaches the broker."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = field(default="", repr=False)
    tls_ca: str | None = None
    client_id: str = "onecard-bridge"
    share_group: str = "bridge"
    session_expiry: int = 7 * 24 * 3600


class Bridge:
    """See the module docstring. ``start()`` connects and runs; ``stop()`` ends it."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        connection: Connection,
        *,
        box: SecretBox,
        registry: Any = None,
        kinds: dict[str, DeviceKindSpec] | None = None,
        clock: Callable[[], datetime] = utcnow,
        outbox_interval: float = 1.0,
        workers: int | None = None,
        tap_deadline: float = 5.0,
        resolve_ttl: float = 10.0,
        outbox_tick: float = 0.1,
    ) -> None:
        self.sessions, self.conn, self.box = sessions, connection, box
        self.registry, self.clock = registry, clock
        self.kinds = kinds if kinds is not None else collect_kinds(registry)
        self.outbox_interval, self.outbox_tick = outbox_interval, outbox_tick
        self.tap_deadline, self.resolve_ttl = tap_deadline, resolve_ttl
        self.counts: Counter[tuple[str, str]] = Counter()
        self.routes: dict[str, MqttRoute] = {**self._core_routes(), **_module_routes(registry)}
        if workers is None:
            # SQLite takes one writer at a time: more workers only queue on its lock (long tail).
            bind = sessions.kw.get("bind")
            workers = 1 if bind is not None and bind.dialect.name == "sqlite" else 4
        # One queue per worker; a device always lands on the same worker (its order is kept).
        self._queues: list[queue.Queue[tuple[mqtt.MQTTMessage, float] | None]] = [
            queue.Queue() for _ in range(max(1, workers))
        ]
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._refs: dict[str, tuple[DeviceRef, float, int]] = {}
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._configs_sent: set[tuple[str, int]] = set()
        self.client = self._make_client()

    # -- lifecycle ---------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.conn.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if self.conn.username:
            c.username_pw_set(self.conn.username, self.conn.password)
        if self.conn.tls_ca:
            c.tls_set(ca_certs=self.conn.tls_ca)
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = lambda *_a: self.subscribed.set()
        c.reconnect_delay_set(1, 5)
        return c

    def start(self) -> None:
        """Connect (persistent session) and start the network loop and the worker."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.conn.session_expiry
        self.client.connect_async(
            self.conn.host, self.conn.port, keepalive=30, clean_start=False, properties=props
        )
        self.client.loop_start()
        for i, q in enumerate(self._queues):
            t = threading.Thread(
                target=self._work, args=(q,), name=f"onecard-bridge-{i}", daemon=True
            )
            self._threads.append(t)
        self._threads.append(
            threading.Thread(target=self._outbox_loop, name="onecard-bridge-outbox", daemon=True)
        )
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Finish the current messages, disconnect, stop threads."""
        self._stop.set()
        self._wake.set()
        for q in self._queues:
            q.put(None)
        deadline = time.monotonic() + 10
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("bridge: broker refused the connection: %s", reason)
            return
        sock = client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe([(f"$share/{self.conn.share_group}/{s}", 1) for s in SUBSCRIPTIONS])
        self.connected.set()
        log.info("bridge connected to %s:%s", self.conn.host, self.conn.port)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if not self._stop.is_set():
            log.warning("bridge disconnected (%s); reconnecting", reason)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        device_id = msg.topic.removeprefix("oc/v1/").partition("/")[0]
        self._queues[hash(device_id) % len(self._queues)].put((msg, time.monotonic()))

    def _work(self, q: queue.Queue[tuple[mqtt.MQTTMessage, float] | None]) -> None:
        while not self._stop.is_set():
            item = q.get()
            if item is None:
                return
            msg, arrived = item
            if msg.topic.endswith("/up/tap") and time.monotonic() - arrived > self.tap_deadline:
                # The terminal stopped waiting long ago and decided offline (its record follows):
                # deciding now would only delay the taps that are still waited for.
                self._count("up/tap", "stale")
            else:
                self._safe(lambda m=msg: self.handle(m.topic, m.payload))  # type: ignore[misc]
            if msg.qos > 0:
                self.client.ack(msg.mid, msg.qos)

    def _outbox_loop(self) -> None:
        """Publish list deltas and commands: at once when the blacklist changed (watched every
        ``outbox_tick``) or a worker asked, else every ``outbox_interval``; never waits for the
        inbound queues."""
        last_mark: int | None = None
        last_run = 0.0
        while not self._stop.is_set():
            woke = self._wake.wait(self.outbox_tick)
            self._wake.clear()
            if self._stop.is_set():
                return
            mark = last_mark
            try:
                mark = self._list_mark()
            except Exception:
                log.exception("bridge: reading the list version failed")
            now = time.monotonic()
            if woke or mark != last_mark or now - last_run >= self.outbox_interval:
                last_mark, last_run = mark, now
                self._safe(self.run_outbox)

    def _list_mark(self) -> int:
        """Changes whenever any tenant's blacklist changes (one indexed query)."""
        with self.sessions() as session, unscoped(reason="bridge: watch every tenant's list"):
            return int(session.scalar(select(func.max(BlacklistChange.id))) or 0)

    def _safe(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception:  # a bug or an outage must not end the bridge
            log.exception("bridge: unexpected error")
            self._count("bridge", "error")

    # -- dispatch ----------------------------------------------------------------------------

    def handle(self, topic_name: str, payload: bytes) -> None:
        """Handle one message: resolve the device, route, commit, publish the answers."""
        device_id, _, rest = topic_name.removeprefix("oc/v1/").partition("/")
        if (
            not topic_name.startswith("oc/v1/")
            or not DEVICE_ID_RE.fullmatch(device_id)
            or not (rest == Topic.STATE.value or rest.startswith("up/"))
        ):
            self._count("unknown", "bad_topic")
            log.warning("bridge: message on a foreign topic %r", topic_name[:120])
            return
        route = self.routes.get(rest)
        with self.sessions() as session:
            device = self._resolve(session, device_id, cached=rest in CACHED_ROUTES)
            if device is None:
                self._count(rest[:40], "unknown_device")
                log.warning("bridge: message from unregistered device %s", device_id[:64])
                return
            if route is None:
                self._reject(device, rest, BadMessage("bad_topic", rest[:80]))
                return
            self._dispatch(session, device, route, payload)
        if rest not in CACHED_ROUTES:
            self._refs.pop(device_id, None)  # the route may have changed the device row
        if rest in WAKE_ROUTES:
            self._wake.set()

    def _resolve(self, session: Session, device_id: str, *, cached: bool) -> DeviceRef | None:
        """`resolve` with a per-process cache (``resolve_ttl``; dropped on a registry change in
        this process and after every route that may change the device row)."""
        now, gen = time.monotonic(), services.generation()
        hit = self._refs.get(device_id) if cached else None
        if hit is not None and hit[1] > now and hit[2] == gen:
            return hit[0]
        ref = resolve(session, device_id)
        if ref is None:
            self._refs.pop(device_id, None)
        else:
            self._refs[device_id] = (ref, now + self.resolve_ttl, gen)
        return ref

    def _dispatch(
        self, session: Session, device: DeviceRef, route: MqttRoute, payload: bytes
    ) -> None:
        ctx = RouteContext(session, device, payload, self.clock(), self)
        try:
            with tenant_scope(device.tenant_id):
                out = list(route.handler(ctx))
                session.commit()
        except BadMessage as exc:
            session.rollback()
            self._reject(device, route.suffix, exc, reply=route.expects_reply, payload=payload)
            return
        except Exception:
            session.rollback()
            log.exception("bridge: %s from %s failed", route.suffix, device.device_id)
            self._count(route.suffix, "error")
            self._error(device, route.suffix, "internal_error", "", payload, route.expects_reply)
            return
        self._count(route.suffix, "ok")
        for message in out:
            self.send(device.device_id, message)
        for fn in ctx.after_commit:
            self._safe(fn)

    def _reject(
        self,
        device: DeviceRef,
        suffix: str,
        exc: BadMessage,
        *,
        reply: bool = True,
        payload: bytes = b"",
    ) -> None:
        self._count(suffix[:40], f"malformed:{exc.reason}")
        log.warning("bridge: %s from %s refused: %s", suffix[:80], device.device_id, exc)
        self._error(device, suffix, exc.reason, exc.detail, payload, reply)

    def _error(
        self, device: DeviceRef, suffix: str, reason: str, detail: str, payload: bytes, reply: bool
    ) -> None:
        if not reply:
            return
        args: dict[str, str | int | bool | None] = {"topic": suffix[:80], "reason": reason}
        if detail:
            args["detail"] = detail[:200]
        ref = reference(payload)
        args.update(ref)
        cmd = Command(cmd_id=f"err-{uuid.uuid4().hex[:16]}", name=CommandName.ERROR, args=args)
        self.send(device.device_id, cmd)
        if suffix == Topic.TAP.value and "req_id" in ref:
            internal = reason == "internal_error"
            self.send(
                device.device_id,
                TapDecision(
                    req_id=ref["req_id"],
                    allow=False,
                    reason=ReasonCode.INTERNAL_ERROR if internal else ReasonCode.MALFORMED,
                    display="Error",
                ),
            )

    def send(self, device_id: str, message: BaseModel) -> None:
        """Publish a protocol message to the device (its topic's QoS and retain flag)."""
        kind = topic_for(message)
        self.publish(topic(device_id, kind), encode(message), qos=kind.qos, retain=kind.retained)

    def publish(self, name: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """The one place the bridge publishes (tests wrap it to validate what goes out)."""
        self.client.publish(name, payload, qos=qos, retain=retain)

    def _count(self, route: str, outcome: str) -> None:
        self.counts[(route, outcome)] += 1
        MESSAGES.labels(route=route, outcome=outcome).inc()

    # -- outbox: list deltas and commands ---------------------------------------------------

    def run_outbox(self) -> int:
        """Publish due list updates and pending commands; returns how many were sent."""
        now = self.clock()
        with self.sessions() as session:
            updates = lists.due_updates(session, now=now)
            cmds = commands.due(session, now=now)
            session.commit()
        for _tid, u in updates:
            self.send(u.device_id, u.message)
        for c in cmds:
            self.send(c.device_id, c.message)
        return len(updates) + len(cmds) + self._publish_configs()

    def _publish_configs(self) -> int:
        """Publish (retained) every newly built bundle once per bridge process."""
        sent = 0
        with self.sessions() as session:
            for tid, device_id, version, pk in bundles.unpublished(session):
                if (device_id, version) in self._configs_sent:
                    continue
                with tenant_scope(tid):
                    latest = bundles.latest(session, pk)
                    if latest is None:
                        continue
                    msg = bundles.message(session, device_id, latest)
                self.send(device_id, msg)
                self._configs_sent.add((device_id, version))
                sent += 1
        return sent

    # -- core routes -------------------------------------------------------------------------

    def _core_routes(self) -> dict[str, MqttRoute]:
        core = [
            MqttRoute("state", self._state),
            MqttRoute("up/hello", self._hello, expects_reply=True),
            MqttRoute("up/tap", self._tap, expects_reply=True),
            MqttRoute("up/records", self._records, expects_reply=True),
            MqttRoute("up/heartbeat", self._heartbeat),
            MqttRoute("up/time", self._time, expects_reply=True),
            MqttRoute("up/receipt", self._receipt, expects_reply=True),
        ]
        return {r.suffix: r for r in core}

    def _device(self, ctx: RouteContext) -> Device:
        dev = ctx.session.get(Device, ctx.device.pk)
        assert dev is not None
        return dev

    def _state(self, ctx: RouteContext) -> list[Out]:
        text = ctx.payload[:200].decode("utf-8", "replace").strip()
        if text.startswith("{"):
            msg = decode(Topic.STATE, ctx.payload)
            assert isinstance(msg, State)
            text = msg.state
        if text not in {"online", "offline"}:
            raise BadMessage("bad_value", "state must be online or offline")
        health.on_state(ctx.session, self._device(ctx), text == "online", now=ctx.now)
        return []

    def _hello(self, ctx: RouteContext) -> list[Out]:
        hello = decode(Topic.HELLO, ctx.payload)
        assert isinstance(hello, Hello)
        dev = self._device(ctx)
        health.on_hello(ctx.session, dev, hello, now=ctx.now)
        # PROTOCOL: a reconnecting device applies pending deltas before it uploads new records,
        # and it uploads when the ack arrives: lists (and config) first, the ack last.
        out: list[Out] = [u.message for u in lists.updates_for(ctx.session, dev, now=ctx.now)]
        latest = bundles.latest(ctx.session, dev.id)
        if latest is not None and hello.config_version < latest.version:
            out.append(bundles.message(ctx.session, dev.device_id, latest))
        out.append(ingest.ack_for(ctx.session, ctx.device, hello.epoch, now=ctx.now))
        return out

    def _tap(self, ctx: RouteContext) -> list[Out]:
        tap = decode(Topic.TAP, ctx.payload)
        assert isinstance(tap, TapRequest)
        hooks = self._hooks(ctx.session)
        outcome = taps.decide(ctx.session, ctx.device, tap, hooks, now=ctx.now)
        if hooks is not None and outcome.request is not None and not outcome.replayed:
            tid = ctx.device.tenant_id

            def completed() -> None:
                with tenant_scope(tid):
                    hooks.onecard_tap_completed(tap=outcome.request, outcome=outcome)

            ctx.after_commit.append(completed)
        return [outcome.message()]

    def _records(self, ctx: RouteContext) -> list[Out]:
        batch = decode_records(ctx.payload)
        done = ingest.ingest(ctx.session, ctx.device, batch, now=ctx.now)
        if done.malformed:
            self._count("up/records", "malformed_record")
            self.counts[("up/records", "malformed_records")] += done.malformed - 1
            log.warning(
                "bridge: %d malformed records from %s", done.malformed, ctx.device.device_id
            )
        return [done.ack]

    def _heartbeat(self, ctx: RouteContext) -> list[Out]:
        hb = decode(Topic.HEARTBEAT, ctx.payload)
        assert isinstance(hb, Heartbeat)
        dev = self._device(ctx)
        health.on_heartbeat(ctx.session, dev, hb, now=ctx.now)
        return [u.message for u in lists.updates_for(ctx.session, dev, now=ctx.now)]

    def _time(self, ctx: RouteContext) -> list[Out]:
        req = decode(Topic.TIME_REQUEST, ctx.payload)
        assert isinstance(req, TimeRequest)
        return [dclock.answer(req.t0, ctx.now, self.clock())]

    def _receipt(self, ctx: RouteContext) -> list[Out]:
        r = decode(Topic.RECEIPT, ctx.payload)
        dev = self._device(ctx)
        if isinstance(r, ListReceipt):
            if r.status == "applied":
                lists.device_reports(
                    ctx.session, dev.id, {r.list: r.version}, now=ctx.now, receipt=True
                )
            elif r.status == "gap":
                lists.device_gap(ctx.session, dev.id, r.list, r.version, now=ctx.now)
        elif isinstance(r, ConfigReceipt):
            if r.status == "applied":
                dev.config_version = r.version
            else:
                log.warning(
                    "bridge: %s %s config v%d: %s", dev.device_id, r.status, r.version, r.detail
                )
        elif isinstance(r, CommandReceipt):
            result: dict[str, Any] = {"status": r.status}
            if r.detail is not None:
                result["detail"] = r.detail
            commands.complete(ctx.session, dev.id, r.cmd_id, r.status == "ok", result, now=ctx.now)
        return []

    def _hooks(self, session: Session) -> Any:
        if self.registry is None:
            return None
        enabled = frozenset(
            session.scalars(select(TenantModule.module_key).where(TenantModule.enabled))
        )
        return self.registry.hooks_for(enabled)


def _module_routes(registry: Any) -> dict[str, MqttRoute]:
    if registry is None:
        return {}
    routes: dict[str, MqttRoute] = {}
    for batch in registry.pm.hook.onecard_mqtt_routes():
        for route in batch or ():
            if not isinstance(route, MqttRoute) or not route.suffix.startswith("up/"):
                raise ValueError(f"bad MQTT route {route!r}: must be an MqttRoute under up/")
            routes[route.suffix] = route
    return routes


def collect_kinds(registry: Any) -> dict[str, DeviceKindSpec]:
    """Device kinds of every installed module (``onecard_device_kinds``)."""
    if registry is None:
        return {}
    out: dict[str, DeviceKindSpec] = {}
    for batch in registry.pm.hook.onecard_device_kinds():
        for spec in batch or ():
            if isinstance(spec, DeviceKindSpec):
                out[spec.kind] = spec
    return out
