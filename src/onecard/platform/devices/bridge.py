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

import contextlib
import logging
import queue
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import Counter as PromCounter
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from onecard.device_agents.protocol.codes import CommandName, ReasonCode
from onecard.device_agents.protocol.topics import (
    BRIDGE_SUBSCRIPTION,
    DEVICE_ID_RE,
    STATE_SUBSCRIPTION,
)
from onecard.device_agents.runtime.paho_matcher import use_acyclic_matcher
from onecard.device_agents.runtime.paho_properties import use_lean_properties
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
    DecodedBatch,
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
# The one route that changes a field of DeviceRef (the clock offset): re-read after it.
REF_ROUTES = frozenset({"up/heartbeat"})
RECEIVE_MAXIMUM = 1000  # unacked messages the broker may send us (acked per chunk, after commit)
MAX_SINGLES = 50
# Taps in a chunk from which deciding them as a `taps.TapBatch` pays. PostgreSQL: from two
# (its reads go with the BEGIN and its rows with the COMMIT, psycopg's pipeline); measured
# in-process, alternating blocks of 100 chunks, against deciding each tap on its own: wall
# time a tap -16 % for chunks of two, -32 % of three, +21 % for one (a single tap's one
# combined read beats the batch's two; sending that read with the BEGIN gained nothing
# measurable). SQLite, with no round trips to save: from four (the batch costs more CPU).
TAP_BATCH_FROM = {"postgresql": 2, "sqlite": 4}
TX_ATTEMPTS = 4  # runs of a shared transaction the database failed as a deadlock victim
RETRY_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure
T = TypeVar("T")  # other messages sharing one transaction (row locks held for its length)
# handled in shared transactions of their kind (`handle_chunk`)
BATCHED_ROUTES = frozenset({"up/tap", "up/records", "up/hello", "state"})
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
    writes: bool = True  # False: never writes (no savepoint needed around it)


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
        max_batch: int = 200,
    ) -> None:
        self.sessions, self.conn, self.box = sessions, connection, box
        self.registry, self.clock = registry, clock
        self.kinds = kinds if kinds is not None else collect_kinds(registry)
        self.outbox_interval, self.outbox_tick = outbox_interval, outbox_tick
        self.tap_deadline, self.resolve_ttl = tap_deadline, resolve_ttl
        self.max_batch = max(1, max_batch)
        self.counts: Counter[tuple[str, str]] = Counter()
        self._core = self._core_routes()
        self.routes: dict[str, MqttRoute] = {**self._core, **_module_routes(registry)}
        if workers is None:
            # SQLite takes one writer at a time: more workers only queue on its lock (long tail).
            # On PostgreSQL, two: one goes on while the other waits for a row lock, and fewer
            # workers make bigger chunks (fewer round trips a tap); with four, the tap round
            # trip at 500 taps/s was 2-3 times longer (docs/devices.md, "Device benchmarks").
            bind = sessions.kw.get("bind")
            workers = 1 if bind is not None and bind.dialect.name == "sqlite" else 2
        # One queue per worker; a device always lands on the same worker (its order is kept).
        self._queues: list[queue.Queue[tuple[mqtt.MQTTMessage, float] | None]] = [
            queue.Queue() for _ in range(max(1, workers))
        ]
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._refs: dict[str, tuple[DeviceRef, float, int]] = {}
        self._used: set[str] = set()  # devices whose cache entry was read since the last refresh
        self._relays: dict[int, tuple[Any, float]] = {}
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
        use_acyclic_matcher(c)  # no garbage cycle per received message
        use_lean_properties()  # no table of every MQTT v5 property per received packet
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
        props.ReceiveMaximum = RECEIVE_MAXIMUM
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
        """Take what has queued up (up to ``max_batch`` messages) and handle it as one chunk:
        under load, taps and record uploads share transactions and statements; when idle, a
        chunk is one message and nothing waits."""
        while True:
            item = q.get()
            if item is None:
                return
            chunk = [item]
            last = False
            while len(chunk) < self.max_batch:
                try:
                    nxt = q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    last = True
                    break
                chunk.append(nxt)
            self._safe(lambda c=chunk: self.handle_chunk(c))  # type: ignore[misc]
            for msg, _arrived in chunk:
                if msg.qos > 0:
                    self.client.ack(msg.mid, msg.qos)
            if last:
                return

    def handle_chunk(self, chunk: list[tuple[mqtt.MQTTMessage, float]]) -> None:
        """Handle queued messages in four kinds of shared transactions: connections (states and
        hellos), taps, record uploads, and the rest (each in its savepoint). A device's messages
        keep their order: before a message of a device whose earlier messages wait in another
        kind of batch, the pending batches are handled. Within a flush, the rest go first, then
        states, then hellos (a reconnecting device's ``state`` before its hello: a reconnect
        storm is one shared transaction, not two per device), then taps, then uploads: a record
        that carries the ``req_id`` of a tap the device gave up waiting for must find that tap
        decided (canteen then records the sale once, not twice)."""
        batch = _Pending()
        for msg, arrived in chunk:
            device_id, _, rest = msg.topic.removeprefix("oc/v1/").partition("/")
            batchable = (
                rest in BATCHED_ROUTES
                and msg.topic.startswith("oc/v1/")
                and self.routes.get(rest) is self._core.get(rest)
                and DEVICE_ID_RE.fullmatch(device_id) is not None
            )
            if batchable and rest == Topic.TAP.value:
                if time.monotonic() - arrived > self.tap_deadline:
                    # The terminal stopped waiting long ago and decided offline (its record
                    # follows): deciding now would only delay the taps still waited for.
                    self._count("up/tap", "stale")
                    continue
                if device_id in batch.single_devices:
                    self._flush(batch)  # its other messages first: a device keeps its order
                batch.add(batch.taps, device_id, bytes(msg.payload))
            elif batchable and rest == Topic.STATE.value:
                # States go first in their flush: anything of the device's before it, first.
                if device_id in batch.single_devices | batch.devices | batch.state_devices:
                    self._flush(batch)
                batch.states.append((device_id, bytes(msg.payload)))
                batch.state_devices.add(device_id)
            elif batchable and rest == Topic.HELLO.value:
                # Hellos go after states, before taps and uploads: a device's earlier messages
                # of another kind (its state aside), or an earlier hello, first.
                if device_id in batch.single_devices or device_id in batch.devices:
                    self._flush(batch)
                batch.add(batch.hellos, device_id, bytes(msg.payload))
            elif batchable:
                if device_id in batch.single_devices:
                    self._flush(batch)
                batch.add(batch.records, device_id, bytes(msg.payload))
            else:
                route = self.routes.get(rest)
                reads_only = route is not None and not route.writes  # a time request
                pending = device_id in batch.devices or device_id in batch.state_devices
                if pending and not reads_only:
                    self._flush(batch)  # its earlier messages first: a device keeps its order
                batch.add(batch.singles, device_id, bytes(msg.payload), topic=msg.topic)
                if len(batch.singles) >= MAX_SINGLES:
                    self._flush(batch)
        self._flush(batch)

    def _flush(self, batch: _Pending) -> None:
        if batch.singles:
            self._safe(lambda s=list(batch.singles): self.handle_singles(s))  # type: ignore[misc]
        if batch.hellos or batch.states:
            self._safe(lambda h=list(batch.hellos), s=list(batch.states): self.handle_hellos(h, s))  # type: ignore[misc]
        if batch.taps:
            self._safe(lambda t=list(batch.taps): self.handle_taps(t))  # type: ignore[misc]
        if batch.records:
            self._safe(lambda r=list(batch.records): self.handle_records(r))  # type: ignore[misc]
        batch.clear()

    def _outbox_loop(self) -> None:
        """Publish list deltas and commands: at once when the blacklist changed (watched every
        ``outbox_tick``), a worker asked or the last round sent something, else every
        ``outbox_interval``; never waits for the inbound queues. Rounds are at least
        ``outbox_tick`` apart: in a reconnect storm every batch of hellos asks for one, and
        back-to-back rounds had taken a core's worth of time from the workers. Every quarter of
        ``resolve_ttl`` it also renews the device cache (:meth:`refresh_refs`)."""
        last_mark: int | None = None
        last_run = refreshed = 0.0
        busy = False  # the last round sent something: more may be due (rows it skipped)
        while not self._stop.is_set():
            if self._stop.wait(max(0.0, last_run + self.outbox_tick - time.monotonic())):
                return
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
            if now - refreshed >= self.resolve_ttl / 4:
                refreshed = now
                self._safe(self.refresh_refs)
            if busy or woke or mark != last_mark or now - last_run >= self.outbox_interval:
                last_mark, last_run = mark, now
                sent: list[int] = []
                self._safe(lambda out=sent: out.append(self.run_outbox()))  # type: ignore[misc]
                # A round skips the list states a worker's transaction holds (SKIP LOCKED):
                # while rounds still find work, the next one comes a tick later, not a second.
                busy = bool(sent and sent[0])

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
        self.handle_singles([(topic_name, payload)])

    def handle_singles(self, items: list[tuple[str, bytes]]) -> None:
        """Handle ``(topic, payload)`` messages one by one in one transaction.

        Each message runs in a savepoint, so one that fails (refused or broken) rolls back
        only its own writes and is answered ``error`` after the transaction; the rest commit
        together and are answered after the commit. A deadlock or serialisation failure runs
        the transaction again (:meth:`transaction`); any other failure of the transaction
        handles several messages again one at a time, or answers a single one
        ``internal_error``."""
        try:
            results = self.transaction(
                lambda session: [self._single(session, t, p) for t, p in items]
            )
        except Exception:
            if len(items) > 1:
                log.warning("bridge: a batch of %d messages failed; one by one", len(items))
                for one in items:
                    self._safe(lambda o=one: self.handle_singles([o]))  # type: ignore[misc]
                return
            log.exception("bridge: handling %s failed", items[0][0][:120])
            self._failed(*items[0])
            return
        for result in results:
            if isinstance(result, _Done):
                self._answer(result)
            elif result is not None:
                result()  # a refusal, answered now that the transaction is over

    def _failed(self, topic_name: str, payload: bytes) -> None:
        """Count a message whose transaction failed and answer ``internal_error`` if its
        device waits for a reply."""
        device_id, _, rest = topic_name.removeprefix("oc/v1/").partition("/")
        route = self.routes.get(rest)
        self._count((route.suffix if route else "unknown")[:40], "error")
        if route is None or not route.expects_reply:
            return
        with self.sessions() as session:
            device = self._resolve(session, device_id, cached=True)
        if device is not None:
            self._error(device, route.suffix, "internal_error", "", payload, True)

    def _answer(self, d: _Done) -> None:
        self._count(d.route.suffix, "ok")
        for message in d.out:
            self.send(d.device.device_id, message)
        for fn in d.after_commit:
            self._safe(fn)
        if d.route.suffix in REF_ROUTES:
            self._refs.pop(d.device.device_id, None)  # the route changed the cached entry
        if d.route.suffix in WAKE_ROUTES:
            self._wake.set()

    def transaction(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a new session and commit. When the database chose the transaction
        as a deadlock victim (or failed it to keep serialisability), or its connection was
        found dead, roll back and run it again, up to ``TX_ATTEMPTS`` times: two workers'
        chunks can post to the same ledger accounts in different orders, and retrying is how
        such a conflict resolves."""
        for attempt in range(1, TX_ATTEMPTS + 1):
            with self.sessions() as session:
                try:
                    result = work(session)
                    session.commit()
                    return result
                except Exception as exc:
                    session.rollback()
                    if attempt == TX_ATTEMPTS or not _transient(exc):
                        raise
            self._count("bridge", "retried")
            time.sleep(random.uniform(0.002, 0.02) * attempt)  # let the other one finish
        raise AssertionError("unreachable")

    def _single(
        self, session: Session, topic_name: str, payload: bytes
    ) -> _Done | Callable[[], None] | None:
        """Route one message inside a savepoint. Returns what to do after the transaction: the
        routed message, or its refusal (a callable that answers it); ``None`` when there is
        nobody to answer (foreign topic, unknown device)."""
        device_id, _, rest = topic_name.removeprefix("oc/v1/").partition("/")
        if (
            not topic_name.startswith("oc/v1/")
            or not DEVICE_ID_RE.fullmatch(device_id)
            or not (rest == Topic.STATE.value or rest.startswith("up/"))
        ):
            self._count("unknown", "bad_topic")
            log.warning("bridge: message on a foreign topic %r", topic_name[:120])
            return None
        route = self.routes.get(rest)
        device = self._resolve(session, device_id, cached=rest not in REF_ROUTES)
        if device is None:
            self._count(rest[:40], "unknown_device")
            log.warning("bridge: message from unregistered device %s", device_id[:64])
            return None
        if route is None:
            return lambda: self._reject(device, rest, BadMessage("bad_topic", rest[:80]))
        ctx = RouteContext(session, device, payload, self.clock(), self)
        reply = route.expects_reply
        try:
            with tenant_scope(device.tenant_id), _savepoint(session, route.writes):
                out = list(route.handler(ctx))
        except BadMessage as exc:
            refused = exc  # ``exc`` itself is unbound when the block ends
            return lambda: self._reject(device, route.suffix, refused, reply=reply, payload=payload)
        except Exception as exc:
            if _transient(exc):
                raise  # the whole transaction is retried
            log.exception("bridge: %s from %s failed", route.suffix, device.device_id)
            self._count(route.suffix, "error")
            return lambda: self._error(device, route.suffix, "internal_error", "", payload, reply)
        return _Done(device, route, payload, out, ctx.after_commit)

    def _cached(self, device_id: str, now: float, gen: int) -> DeviceRef | None:
        """The cache's entry for ``device_id`` while it is fresh (``resolve_ttl``, registry
        generation), else ``None``."""
        hit = self._refs.get(device_id)
        if hit is not None and hit[1] > now and hit[2] == gen:
            self._used.add(device_id)
            return hit[0]
        return None

    def _remember(
        self, device_id: str, ref: DeviceRef | None, now: float, gen: int, *, heard: bool = True
    ) -> None:
        """Cache ``ref``; ``heard``: the device sent something (renew its entry ahead)."""
        if ref is None:
            self._refs.pop(device_id, None)
            return
        self._refs[device_id] = (ref, now + self.resolve_ttl, gen)
        if heard:
            self._used.add(device_id)

    def refresh_refs(self) -> int:
        """Read again (`services.resolve_many`) the cache entries of devices heard from since
        the last refresh that expire within half of ``resolve_ttl``; returns how many.

        Runs on the outbox thread, so a busy device's entry is renewed before it expires and
        its messages never wait for the registry read (under a steady load of taps, resolving
        expired entries in the workers' chunks had cost a tenth of the bridge's CPU). An entry
        a worker dropped or replaced meanwhile (a heartbeat changed the row) is left as the
        worker left it: the read may predate that change."""
        used, self._used = self._used, set()
        now, gen = time.monotonic(), services.generation()
        due = {
            d: hit
            for d in used
            if (hit := self._refs.get(d)) is not None and hit[1] - now < self.resolve_ttl / 2
        }
        if not due:
            return 0
        with self.sessions() as session:
            found = services.resolve_many(session, list(due))
        for device_id, old in due.items():
            if self._refs.get(device_id) is old:  # nobody changed it while we read
                self._remember(device_id, found.get(device_id), now, gen, heard=False)
        return len(due)

    def _resolve_uncached(self, session: Session, device_ids: list[str]) -> set[str]:
        """Fill the resolve cache for those of ``device_ids`` it lacks, in one query (a chunk
        of taps would otherwise pay one round trip per device whose entry expired); returns
        the ids it looked up and the registry does not know."""
        now, gen = time.monotonic(), services.generation()
        wanted = [d for d in device_ids if self._cached(d, now, gen) is None]
        if not wanted:
            return set()
        found = services.resolve_many(session, wanted)
        for device_id, ref in found.items():
            self._remember(device_id, ref, now, gen)
        return set(wanted) - set(found)

    def _resolve(self, session: Session, device_id: str, *, cached: bool) -> DeviceRef | None:
        """`resolve` with a per-process cache (``resolve_ttl``; dropped on a registry change in
        this process and after every route that may change the device row)."""
        now, gen = time.monotonic(), services.generation()
        hit = self._cached(device_id, now, gen) if cached else None
        if hit is not None:
            return hit
        ref = resolve(session, device_id)
        self._remember(device_id, ref, now, gen)
        return ref

    def handle_taps(self, items: list[tuple[str, bytes]]) -> None:
        """Decide ``(device id, payload)`` taps in one transaction, then answer each.

        A tap that fails unexpectedly rolls the batch back, and every tap of it is handled
        again on its own (so one bad tap costs the others only time, never an answer); a
        deadlock runs the batch again (:meth:`transaction`)."""
        wanted = self._decode_all(items, Topic.TAP)
        if not wanted:
            return

        def decide_all(session: Session) -> list[tuple[DeviceRef, taps.TapOutcome, Any]]:
            now, out = self.clock(), []
            batch = None
            if len(wanted) >= TAP_BATCH_FROM.get(session.get_bind().dialect.name, 4):
                batch = taps.TapBatch(session, [(w.device, w.message) for w in wanted])
            for w in wanted:
                assert isinstance(w.message, TapRequest)
                hooks = self._hooks_for(session, w.device.tenant_id)
                with tenant_scope(w.device.tenant_id):
                    outcome = taps.decide(session, w.device, w.message, hooks, now=now, batch=batch)
                out.append((w.device, outcome, hooks))
            if batch is not None:
                batch.write(session)
            return out

        try:
            decided = self.transaction(decide_all)
        except Exception:
            log.warning("bridge: a batch of %d taps failed; one by one", len(wanted))
            self._one_by_one("up/tap", [(w.device.device_id, w.payload) for w in wanted])
            return
        for device, outcome, hooks in decided:
            self._count("up/tap", "ok")
            self.send(device.device_id, outcome.message())
            if hooks is not None and outcome.request is not None and not outcome.replayed:
                self._safe(lambda h=hooks, o=outcome, d=device: _completed(h, d, o))  # type: ignore[misc]

    def handle_hellos(
        self, items: list[tuple[str, bytes]], states: list[tuple[str, bytes]] | None = None
    ) -> None:
        """Apply ``(device id, payload)`` states, then answer hellos, of distinct devices in one
        transaction (a reconnect storm: one statement per step for all of them, instead of a
        savepoint and its round trips per message); then send each hello's device its list
        updates, its newer config bundle and its ack, in that order (`_greet`). A failure falls
        back to one message at a time."""
        flips, wanted = self.transaction(
            lambda s: (
                list(self._decoded(s, states or [], Topic.STATE)),
                list(self._decoded(s, items, Topic.HELLO)),
            )
        )
        if not wanted and not flips:
            return
        by_tenant: dict[int, tuple[list[tuple[int, bool]], list[tuple[DeviceRef, Hello]]]] = {}
        for f in flips:
            by_tenant.setdefault(f.device.tenant_id, ([], []))[0].append((f.device.pk, f.message))
        for w in wanted:
            by_tenant.setdefault(w.device.tenant_id, ([], []))[1].append((w.device, w.message))

        def connect_all(session: Session) -> list[tuple[DeviceRef, list[Out]]]:
            now = self.clock()
            out: list[tuple[DeviceRef, list[Out]]] = []
            for tid, (online, hellos) in sorted(by_tenant.items()):
                with tenant_scope(tid):
                    health.on_states(session, online, now=now)
                    answers = self._greet(session, hellos, now) if hellos else []
                out += zip([d for d, _h in hellos], answers, strict=True)
            return out

        try:
            answered = self.transaction(connect_all)
        except Exception:
            log.warning("bridge: %d states and hellos failed; one by one", len(flips) + len(wanted))
            self._one_by_one("state", [(f.device.device_id, f.payload) for f in flips])
            self._one_by_one("up/hello", [(w.device.device_id, w.payload) for w in wanted])
            return
        for _f in flips:
            self._count("state", "ok")
        for device, messages in answered:
            self._count("up/hello", "ok")
            for message in messages:
                self.send(device.device_id, message)
        self._wake.set()  # list updates or commands may be due for them

    def handle_records(self, items: list[tuple[str, bytes]]) -> None:
        """Ingest ``(device id, payload)`` uploads in one transaction, then ack each (as
        :meth:`handle_taps`: a deadlock runs it again, another failure falls back to one
        upload at a time)."""
        uploads = [
            (ingest.Upload(w.device, w.message), w.payload)
            for w in self._decode_all(items, Topic.RECORDS)
            if isinstance(w.message, DecodedBatch)
        ]
        if not uploads:
            return

        def ingest_all(session: Session) -> list[ingest.Ingested]:
            now = self.clock()
            done = ingest.ingest_many(session, [u for u, _p in uploads], now=now)
            for (upload, _p), result in zip(uploads, done, strict=True):
                self._records_stored(session, upload.device, result, now)
            return done

        try:
            done = self.transaction(ingest_all)
        except Exception:
            log.warning("bridge: a batch of %d uploads failed; one by one", len(uploads))
            self._one_by_one("up/records", [(u.device.device_id, p) for u, p in uploads])
            return
        for (upload, _p), result in zip(uploads, done, strict=True):
            self._count("up/records", "ok")
            self._note_malformed(upload.device, result)
            self.send(upload.device.device_id, result.ack)

    def _decode_all(self, items: list[tuple[str, bytes]], kind: Topic) -> list[_Wanted]:
        """:meth:`_decoded` of every item; in a transaction only when the device cache lacks
        one of their devices (under a steady load of taps it holds all of them, and a session
        that ran no statement still cost a chunk of one tap a tenth of its CPU)."""
        now, gen = time.monotonic(), services.generation()
        refs = {device_id: self._cached(device_id, now, gen) for device_id, _p in items}
        if None not in refs.values():
            return list(self._decoded(None, items, kind, refs))
        return self.transaction(lambda s: list(self._decoded(s, items, kind)))

    def _decoded(
        self,
        session: Session | None,
        items: list[tuple[str, bytes]],
        kind: Topic,
        refs: dict[str, DeviceRef | None] | None = None,
    ) -> Iterator[_Wanted]:
        """Resolve and decode each item; unknown devices and bad payloads are counted and
        refused here (they never reach the shared transaction). A ``state`` decodes to whether
        the device is online. ``refs``: the items' devices, already resolved (no ``session``
        needed); else callers run it in :meth:`transaction`: its registry read (one, before
        anything is refused) is often a chunk's first statement, and on a connection the server
        dropped it must run again on a new one rather than fail the chunk."""
        if refs is None:
            assert session is not None, "_decoded needs a session or the resolved devices"
            unknown = self._resolve_uncached(session, [device_id for device_id, _p in items])
            refs = {
                d: None if d in unknown else self._resolve(session, d, cached=True)
                for d, _p in items
            }
        for device_id, payload in items:
            device = refs[device_id]
            if device is None:
                self._count(kind.value, "unknown_device")
                log.warning("bridge: message from unregistered device %s", device_id[:64])
                continue
            try:
                if kind is Topic.RECORDS:
                    message: Any = decode_records(payload)
                elif kind is Topic.STATE:
                    message = _online(payload)
                else:
                    message = decode(kind, payload)
            except BadMessage as exc:
                self._reject(
                    device, kind.value, exc, payload=payload, reply=kind is not Topic.STATE
                )
                continue
            yield _Wanted(device, message, payload)

    def _one_by_one(self, suffix: str, items: list[tuple[str, bytes]]) -> None:
        for device_id, payload in items:
            self._safe(lambda d=device_id, p=payload: self.handle(f"oc/v1/{d}/{suffix}", p))  # type: ignore[misc]

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
            MqttRoute("up/time", self._time, expects_reply=True, writes=False),
            MqttRoute("up/receipt", self._receipt, expects_reply=True),
        ]
        return {r.suffix: r for r in core}

    def _device(self, ctx: RouteContext) -> Device:
        dev = ctx.session.get(Device, ctx.device.pk)
        assert dev is not None
        return dev

    def _state(self, ctx: RouteContext) -> list[Out]:
        health.on_state(ctx.session, ctx.device.pk, _online(ctx.payload), now=ctx.now)
        return []

    def _hello(self, ctx: RouteContext) -> list[Out]:
        hello = decode(Topic.HELLO, ctx.payload)
        assert isinstance(hello, Hello)
        return self._greet(ctx.session, [(ctx.device, hello)], ctx.now)[0]

    def _greet(
        self, session: Session, hellos: list[tuple[DeviceRef, Hello]], now: datetime
    ) -> list[list[Out]]:
        """What each ``(device, hello)`` of the current tenant is answered with (distinct
        devices; each step one statement for all of them).

        PROTOCOL: a reconnecting device applies pending deltas before it uploads new records,
        and it uploads when the ack arrives: lists (and config) first, the ack last."""
        pks = [d.pk for d, _h in hellos]
        health.on_hellos(session, [(d.pk, h) for d, h in hellos], now=now)
        updates = lists.updates_for_many(
            session, [(d.pk, d.device_id) for d, _h in hellos], now=now
        )
        newest = bundles.latest_many(session, pks)
        acks = ingest.acks_for(session, [(d, h.epoch) for d, h in hellos], now=now)
        answers = []
        for device, hello in hellos:
            out: list[Out] = [u.message for u in updates[device.pk]]
            latest = newest.get(device.pk)
            if latest is not None and hello.config_version < latest.version:
                out.append(bundles.message(session, device.device_id, latest))
            out.append(acks[(device.pk, hello.epoch)])
            answers.append(out)
        return answers

    def _tap(self, ctx: RouteContext) -> list[Out]:
        tap = decode(Topic.TAP, ctx.payload)
        assert isinstance(tap, TapRequest)
        hooks = self._hooks_for(ctx.session, ctx.device.tenant_id)
        outcome = taps.decide(ctx.session, ctx.device, tap, hooks, now=ctx.now)
        if hooks is not None and outcome.request is not None and not outcome.replayed:
            ctx.after_commit.append(lambda: _completed(hooks, ctx.device, outcome))
        return [outcome.message()]

    def _records(self, ctx: RouteContext) -> list[Out]:
        batch = decode_records(ctx.payload)
        done = ingest.ingest(ctx.session, ctx.device, batch, now=ctx.now)
        self._records_stored(ctx.session, ctx.device, done, ctx.now)
        self._note_malformed(ctx.device, done)
        return [done.ack]

    def _note_malformed(self, device: DeviceRef, done: ingest.Ingested) -> None:
        if done.malformed:
            self._count("up/records", "malformed_record")
            self.counts[("up/records", "malformed_records")] += done.malformed - 1
            log.warning("bridge: %d malformed records from %s", done.malformed, device.device_id)

    def _records_stored(
        self,
        session: Session,
        device: DeviceRef,
        done: ingest.Ingested,
        now: datetime,
    ) -> None:
        """``onecard_records_stored`` in a savepoint: a module's failure keeps the records."""
        hooks = self._hooks_for(session, device.tenant_id) if done.new_rows else None
        if hooks is None:
            return
        new = done.new
        try:
            with tenant_scope(device.tenant_id), session.begin_nested():
                hooks.onecard_records_stored(device=device, records=new, session=session, now=now)
        except Exception:
            log.exception(
                "bridge: a module failed on %d records from %s (stored; re-run them)",
                len(new),
                device.device_id,
            )
            self._count("up/records", "module_error")

    def _heartbeat(self, ctx: RouteContext) -> list[Out]:
        hb = decode(Topic.HEARTBEAT, ctx.payload)
        assert isinstance(hb, Heartbeat)
        dev = self._device(ctx)
        health.on_heartbeat(ctx.session, dev, hb, now=ctx.now)
        updates = lists.updates_for(ctx.session, dev.id, dev.device_id, now=ctx.now)
        return [u.message for u in updates]

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

    def _hooks_for(self, session: Session, tenant_id: int) -> Any:
        """The hook relay of the tenant's enabled modules (cached for ``resolve_ttl``: a
        module switched on or off takes effect in the bridge within that time)."""
        if self.registry is None:
            return None
        now = time.monotonic()
        hit = self._relays.get(tenant_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        with tenant_scope(tenant_id):
            enabled = frozenset(
                session.scalars(select(TenantModule.module_key).where(TenantModule.enabled))
            )
        relay = self.registry.hooks_for(enabled)
        self._relays[tenant_id] = (relay, now + self.resolve_ttl)
        return relay


@dataclass(frozen=True)
class _Wanted:
    """A decoded tap or upload of a known device, waiting for its shared transaction."""

    device: DeviceRef
    message: Any
    payload: bytes


@dataclass
class _Done:
    """A message routed inside a shared transaction, waiting for its commit to be answered."""

    device: DeviceRef
    route: MqttRoute
    payload: bytes
    out: list[Out]
    after_commit: list[Callable[[], None]]


class _Pending:
    """Taps, uploads and hellos waiting to be handled together, and the devices they came
    from."""

    def __init__(self) -> None:
        self.taps: list[tuple[str, bytes]] = []
        self.records: list[tuple[str, bytes]] = []
        self.hellos: list[tuple[str, bytes]] = []
        self.states: list[tuple[str, bytes]] = []  # (device id, payload)
        self.singles: list[tuple[str, bytes]] = []  # (topic, payload)
        self.devices: set[str] = set()  # with taps, uploads or hellos pending
        self.single_devices: set[str] = set()  # with other messages pending
        self.state_devices: set[str] = set()  # with a state pending

    def add(
        self, to: list[tuple[str, bytes]], device_id: str, payload: bytes, topic: str = ""
    ) -> None:
        to.append((topic or device_id, payload))
        (self.single_devices if topic else self.devices).add(device_id)

    def clear(self) -> None:
        self.taps.clear()
        self.records.clear()
        self.hellos.clear()
        self.states.clear()
        self.state_devices.clear()
        self.singles.clear()
        self.devices.clear()
        self.single_devices.clear()


def _online(payload: bytes) -> bool:
    """A ``state`` payload: whether the device is online. The protocol's JSON, or the bare
    word a plain MQTT client's retained message carries; anything else is `BadMessage`."""
    text = payload[:200].decode("utf-8", "replace").strip()
    if text.startswith("{"):
        msg = decode(Topic.STATE, payload)
        assert isinstance(msg, State)
        text = msg.state
    if text not in {"online", "offline"}:
        raise BadMessage("bad_value", "state must be online or offline")
    return text == "online"


def _transient(exc: BaseException) -> bool:
    """A deadlock, a serialisation failure or a dead connection (the bridge's engine does not
    ping before use; the pool has dropped it): the transaction may succeed when run again.
    Running it again is safe when its commit was lost on the way: a tap finds its first
    decision, an upload's records are found stored."""
    if not isinstance(exc, DBAPIError):
        return False
    return exc.connection_invalidated or getattr(exc.orig, "sqlstate", None) in RETRY_SQLSTATES


@contextlib.contextmanager
def _savepoint(session: Session, writes: bool) -> Iterator[None]:
    """A savepoint around a route that writes; nothing around one that never does."""
    if not writes:
        yield
        return
    with session.begin_nested():
        yield


def _completed(hooks: Any, device: DeviceRef, outcome: taps.TapOutcome) -> None:
    """``onecard_tap_completed`` after the tap's commit, in the device's tenant."""
    with tenant_scope(device.tenant_id):
        hooks.onecard_tap_completed(tap=outcome.request, outcome=outcome)


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
