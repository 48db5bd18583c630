"""A tiny stand-in for the platform side of the protocol, for the runtime and simulator tests.

It reads every ``up`` message through the shared subscription, validates it against the
AsyncAPI document (failures collect in ``errors``), stores records by (device, epoch, seq),
acks with `compute_ack`, answers taps and clock syncs, and on hello sends pending list deltas
and then an ack. Also the mosquitto fixture both test folders use.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from onecard.device_agents.protocol.acks import compute_ack
from onecard.device_agents.protocol.asyncapi import validate_message
from onecard.device_agents.protocol.codec import decode_records, decode_topic, encode, topic_for
from onecard.device_agents.protocol.codes import ProtocolError, ReasonCode
from onecard.device_agents.protocol.messages import (
    Heartbeat,
    Hello,
    ListDelta,
    Record,
    TapDecision,
    TapRequest,
    TimeRequest,
    TimeResponse,
)
from onecard.device_agents.protocol.topics import (
    BRIDGE_SUBSCRIPTION,
    STATE_SUBSCRIPTION,
    Topic,
    parse_topic,
    topic,
)
from onecard.device_agents.sim.broker import BrokerError, PrivateMosquitto

_ids = itertools.count()


def start_mosquitto(folder: Path) -> PrivateMosquitto:
    """A private broker, or a loud test failure (never a skip)."""
    try:
        return PrivateMosquitto(folder).start()
    except BrokerError as err:
        pytest.fail(f"private mosquitto could not start: {err}")


def allow_all(_device: str, request: TapRequest) -> TapDecision:
    """Default decision: allowed, balance 100.00."""
    return TapDecision(req_id=request.req_id, allow=True, reason=ReasonCode.OK, balance=10000)


class PlatformDouble:
    """See the module docstring. Thread-safe reads through `wait_until` and `lock`."""

    def __init__(self, port: int, host: str = "127.0.0.1", *, prefix: str = "") -> None:
        self.prefix = prefix
        self.lock = threading.Condition()
        self.stored: dict[tuple[str, str], dict[int, Record]] = defaultdict(dict)
        self.gone: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        self.uploads = 0
        self.events: list[tuple[str, str, object]] = []
        self.errors: list[str] = []
        self.states: dict[str, str] = {}
        self.heartbeats: dict[str, Heartbeat] = {}
        self.lists: dict[str, list[ListDelta]] = defaultdict(list)
        self.decide: Callable[[str, TapRequest], TapDecision] | None = allow_all
        self.drop_records = 0
        self.clock_offset_ms = 0
        self.answer_time = True
        self.retained: set[str] = set()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"platform-double-{next(_ids)}-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv5,
        )
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, 30)
        self.client.loop_start()
        if not self._subscribed.wait(5):
            pytest.fail("platform double: no SUBACK from the broker")

    def close(self) -> None:
        for device in self.retained:  # an empty retained payload clears the retained message
            self.client.publish(
                topic(device, Topic.CONFIG), b"", qos=1, retain=True
            ).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, _u, _f, _rc, _p):  # type: ignore[no-untyped-def]
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.prefix:  # one device on a shared broker: don't join anyone's "bridge" group
            client.subscribe([(f"oc/v1/{self.prefix}/up/#", 1), (f"oc/v1/{self.prefix}/state", 1)])
        else:
            client.subscribe([(BRIDGE_SUBSCRIPTION, 1), (STATE_SUBSCRIPTION, 1)])

    # sending ------------------------------------------------------------------------------

    def send(self, device: str, message: object) -> None:
        kind = topic_for(message)  # type: ignore[arg-type]
        if kind.retained:
            self.retained.add(device)
        self.client.publish(
            topic(device, kind),
            encode(message),
            qos=kind.qos,
            retain=kind.retained,  # type: ignore[arg-type]
        )

    def add_list_version(self, name: str, add: tuple[int, ...], remove: tuple[int, ...] = ()):
        """A new list version (kept for devices that say hello later); returns the delta."""
        with self.lock:
            history = self.lists[name]
            delta = ListDelta(
                list=name, from_=len(history), to=len(history) + 1, add=add, remove=remove
            )
            history.append(delta)
        return delta

    def ack(self, device: str, epoch: str) -> None:
        with self.lock:
            message = compute_ack(
                epoch, self.stored[(device, epoch)], gone=self.gone[(device, epoch)]
            )
        self.send(device, message)

    # receiving ----------------------------------------------------------------------------

    def _on_message(self, _c, _u, msg):  # type: ignore[no-untyped-def]
        if not msg.payload:  # a retained message being cleared, not a device message
            return
        try:
            validate_message(msg.topic, msg.payload)
            device, kind = parse_topic(msg.topic)
            if kind is Topic.RECORDS:
                self._records(device, msg.payload)
                return
            _, _, message = decode_topic(msg.topic, msg.payload)
        except ProtocolError as err:
            with self.lock:
                self.errors.append(f"{msg.topic}: {err}")
                self.lock.notify_all()
            return
        with self.lock:
            self.events.append((device, kind.value, message))
            if kind is Topic.STATE:
                self.states[device] = message.state  # type: ignore[union-attr]
            elif kind is Topic.HEARTBEAT:
                self.heartbeats[device] = message  # type: ignore[assignment]
            self.lock.notify_all()
        if isinstance(message, Hello):
            self._hello(device, message)
        elif isinstance(message, TapRequest) and self.decide is not None:
            self.send(device, self.decide(device, message))
        elif isinstance(message, TimeRequest) and self.answer_time:
            now = time.time_ns() // 1_000_000 + self.clock_offset_ms
            self.send(device, TimeResponse(t0=message.t0, t1=now, t2=now))

    def _hello(self, device: str, hello: Hello) -> None:
        with self.lock:
            pending = [
                d
                for name, history in self.lists.items()
                for d in history
                if d.from_ >= hello.lists.get(name, 0)
            ]
        for delta in pending:
            self.send(device, delta)
        self.ack(device, hello.epoch)

    def _records(self, device: str, payload: bytes) -> None:
        batch = decode_records(payload)
        with self.lock:
            self.events.append((device, "up/records", batch))
            if self.drop_records > 0:
                self.drop_records -= 1
                self.lock.notify_all()
                return
            self.uploads += len(batch.records)
            for record in batch.records:
                self.stored[(device, batch.epoch)].setdefault(record.seq, record)
            self.gone[(device, batch.epoch)].extend(batch.gone)
            self.lock.notify_all()
        self.ack(device, batch.epoch)

    # reading ------------------------------------------------------------------------------

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait for ``predicate`` (re-checked on every platform event and every 10 ms)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(min(left, 0.01))
            return True

    def records_of(self, device: str) -> list[Record]:
        with self.lock:
            return [
                r for (d, _), by_seq in self.stored.items() if d == device for r in by_seq.values()
            ]

    def count(self, device: str | None = None) -> int:
        with self.lock:
            return sum(len(v) for (d, _), v in self.stored.items() if device in (None, d))

    def of_kind(self, device: str, kind: str) -> list[object]:
        with self.lock:
            return [m for d, k, m in self.events if d == device and k == kind]
