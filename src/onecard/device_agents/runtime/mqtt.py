"""MQTT transport of the agents (the only paho user): `NetLoop`, one network thread that drives
any number of paho clients through their external-loop API, and `MqttLink`, one device's
session — last will, ``online`` on connect, TCP_NODELAY, reconnect with backoff and jitter.

All agent callbacks run in the loop thread, so an `Agent` needs no locks; other threads hand
work over with `NetLoop.call_soon`.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import random
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode as MqttReason

from onecard.device_agents.protocol.codec import encode
from onecard.device_agents.protocol.messages import State
from onecard.device_agents.protocol.topics import Topic, device_subscription, topic
from onecard.device_agents.runtime.agent import Agent
from onecard.device_agents.runtime.paho_matcher import use_acyclic_matcher
from onecard.device_agents.runtime.paho_properties import use_lean_properties

log = logging.getLogger(__name__)


class NetLoop:
    """A selector loop for many paho clients, timers and cross-thread calls."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._calls: deque[Callable[[], None]] = deque()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._ids = itertools.count()
        self._clients: set[mqtt.Client] = set()
        self._tickers: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None
        self._running = False
        self.tick_s = 0.05

    # scheduling ---------------------------------------------------------------------------

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the loop thread (safe from any thread)."""
        self._calls.append(fn)
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the loop thread after ``delay`` seconds (call from the loop thread,
        or wrap in `call_soon`)."""
        heapq.heappush(self._timers, (self.monotonic() + delay, next(self._ids), fn))

    def every_tick(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on every tick (about ``tick_s``), e.g. `Agent.poll`."""
        self._tickers.append(fn)

    def remove_tick(self, fn: Callable[[], None]) -> None:
        """Stop calling ``fn`` on ticks."""
        if fn in self._tickers:
            self._tickers.remove(fn)

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` in the loop thread and return its result (blocking the caller)."""
        if threading.current_thread() is self._thread:
            return fn()
        box: list[Any] = []
        done = threading.Event()

        def run() -> None:
            try:
                box.append((True, fn()))
            except BaseException as err:  # handed to the caller
                box.append((False, err))
            done.set()

        self.call_soon(run)
        if not done.wait(timeout):
            raise TimeoutError("network loop did not answer")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    # paho external loop -------------------------------------------------------------------

    def attach(self, client: mqtt.Client) -> None:
        """Drive ``client``'s sockets from this loop."""
        client.on_socket_open = self._open
        client.on_socket_close = self._close
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._no_write
        self._clients.add(client)

    def detach(self, client: mqtt.Client) -> None:
        """Stop driving ``client``."""
        self._clients.discard(client)

    def _open(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        self._sel.register(sock, selectors.EVENT_READ, client)

    def _close(self, _client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(sock)

    def _want_write(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def _no_write(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.modify(sock, selectors.EVENT_READ, client)

    # running ------------------------------------------------------------------------------

    def start(self) -> None:
        """Run the loop in a daemon thread."""
        self._running = True
        self._thread = threading.Thread(target=self._run, name="oc-netloop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop thread and wait for it."""
        self._running = False
        self.call_soon(lambda: None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def _run(self) -> None:
        next_tick = next_misc = self.monotonic()
        while self._running:
            now = self.monotonic()
            wait = min(next_tick, self._timers[0][0] if self._timers else next_tick) - now
            for key, mask in self._sel.select(max(0.0, min(wait, self.tick_s))):
                self._io(key, mask)
            self._run_calls()
            now = self.monotonic()
            while self._timers and self._timers[0][0] <= now:
                self._safe(heapq.heappop(self._timers)[2])
            if now >= next_tick:
                next_tick = now + self.tick_s
                for fn in list(self._tickers):
                    self._safe(fn)
            if now >= next_misc:
                next_misc = now + 1.0
                for client in list(self._clients):
                    self._safe(client.loop_misc)

    def _io(self, key: selectors.SelectorKey, mask: int) -> None:
        client = key.data
        if client is None:
            try:
                while self._wake_r.recv(4096):
                    pass
            except BlockingIOError:
                pass
            return
        if mask & selectors.EVENT_READ:
            self._safe(lambda: client.loop_read(100))
        if mask & selectors.EVENT_WRITE:
            self._safe(client.loop_write)

    def _run_calls(self) -> None:
        while self._calls:
            self._safe(self._calls.popleft())

    @staticmethod
    def _safe(fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception:  # one device's failure never stops the loop for the others
            log.exception("network loop callback failed")


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where and how to connect."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    keepalive: int = 30


class MqttLink:
    """One device's MQTT session on a `NetLoop`, bound to an `Agent`."""

    def __init__(
        self,
        loop: NetLoop,
        agent: Agent,
        broker: BrokerAddress,
        *,
        rng: random.Random,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self.loop = loop
        self.agent = agent
        self.broker = broker
        self.rng = rng
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.device_id = agent.settings.device_id
        self.attempt = 0
        self.connected = False
        self.stopped = True
        self.client = self._make_client()
        agent.attach(self.publish)

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.device_id, protocol=mqtt.MQTTv5
        )
        use_acyclic_matcher(client)  # no garbage cycle per received message
        use_lean_properties()  # no table of every MQTT v5 property per received packet
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls_ca:
            client.tls_set(ca_certs=self.broker.tls_ca, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        state = topic(self.device_id, Topic.STATE)
        client.will_set(state, encode(State(state="offline")), qos=0, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.loop.attach(client)
        return client

    def start(self) -> None:
        """Connect now (from the loop thread, or via `NetLoop.call_soon`)."""
        self.stopped = False
        self._connect()

    def _connect(self) -> None:
        if self.stopped or self.connected:
            return
        try:
            if self.attempt == 0 and not self.client.is_connected():
                self.client.connect(self.broker.host, self.broker.port, self.broker.keepalive)
            else:
                self.client.reconnect()
        except OSError as err:
            log.debug("%s: connect failed: %s", self.device_id, err)
            self._retry()

    def _retry(self) -> None:
        self.attempt += 1
        delay = min(self.backoff_cap, self.backoff_base * 2 ** min(self.attempt, 16))
        self.loop.call_later(delay * (0.5 + self.rng.random() / 2), self._connect)

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        _flags: Any,
        reason: MqttReason,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.warning("%s: broker refused: %s", self.device_id, reason)
            return
        sock = client.socket()
        if isinstance(sock, socket.socket | ssl.SSLSocket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.attempt = 0
        self.connected = True
        client.subscribe(device_subscription(self.device_id), qos=1)
        state = topic(self.device_id, Topic.STATE)
        client.publish(state, encode(State(state="online")), qos=0, retain=True)
        self.agent.on_connect()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: Any,
        reason: MqttReason,
        _props: Properties | None,
    ) -> None:
        was = self.connected
        self.connected = False
        if was:
            self.agent.on_disconnect()
        if not self.stopped:
            self._retry()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.agent.on_message(msg.topic, bytes(msg.payload))

    def publish(self, name: str, payload: bytes, qos: int, retain: bool) -> None:
        """Publish if connected; otherwise drop (records stay in the store until acked)."""
        if not self.connected:
            return
        info = self.client.publish(name, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_QUEUE_SIZE):
            log.debug("%s: publish failed: %s", self.device_id, info.rc)

    def stop(self) -> None:
        """Disconnect cleanly (the broker does not publish the last will; publish offline)."""
        self.stopped = True
        if self.connected:
            state = topic(self.device_id, Topic.STATE)
            self.client.publish(state, encode(State(state="offline")), qos=0, retain=True)
            self.client.disconnect()
        self.loop.detach(self.client)

    def go_offline(self) -> None:
        """Lose the network and stay offline until `go_online` (a simulated outage)."""
        self.stopped = True
        self.cut()

    def go_online(self) -> None:
        """End an outage: reconnect now."""
        self.attempt = 0
        self.start()

    def retire(self) -> None:
        """Die without a word (power loss): cut the network, never call the agent again."""
        self.stopped = True
        self.connected = False
        self.client.on_connect = None
        self.client.on_disconnect = None
        self.client.on_message = None
        self.cut()
        self.loop.detach(self.client)

    def cut(self) -> None:
        """Lose the network without a DISCONNECT (the broker publishes the last will)."""
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
