"""Real brokers for the device tests: the machine's Mosquitto at 127.0.0.1:1883, and a private
Mosquitto with TLS, password file and the generated ACL on a free port. Missing binaries fail."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import queue
import shutil
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.orm import Session, sessionmaker

from onecard.device_agents.protocol.asyncapi import validate_message
from onecard.device_agents.protocol.codes import ProtocolError
from onecard.platform.actors import Actor
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices import services
from onecard.platform.devices.bridge import Bridge, Connection
from onecard.platform.devices.broker import EmbeddedBroker, Listener, Tls, mosquitto_binary
from onecard.platform.secrets import SecretBox
from onecard.platform.tenants.models import Tenant

SECRET = "test-secret-key-0123456789abcdef"
PLATFORM_PW = "platform-test-password"
WAIT = 45.0
EPOCH = "ep-0001"
DEVICE_TIME = 1_788_220_800_000  # 2026-09-01T00:00:00Z in ms


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cert(subject: str, key: Any, issuer: Any, issuer_key: Any, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_tls_files(folder: Path) -> Tls:
    """A CA and a server certificate for 127.0.0.1/localhost (EC P-256)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, srv_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "onecard test CA")])
    ca = _cert("onecard test CA", ca_key, ca_name, ca_key, ca=True)
    srv = _cert("localhost", srv_key, ca_name, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (folder / "ca.crt").write_bytes(ca.public_bytes(pem))
    (folder / "server.crt").write_bytes(srv.public_bytes(pem))
    (folder / "server.key").write_bytes(
        srv_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Tls(str(folder / "ca.crt"), str(folder / "server.crt"), str(folder / "server.key"))


@dataclass
class BrokerInfo:
    """A broker the tests talk to."""

    name: str
    host: str
    port: int
    tls_ca: str | None
    platform_user: str
    platform_password: str
    acl: bool
    embedded: EmbeddedBroker | None = None
    devices: list[tuple[str, str, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def register(self, device_id: str, password_hash: str, password: str) -> None:
        """Make the broker accept ``device_id`` (password file + SIGHUP, then wait)."""
        if self.embedded is None:
            return
        with self.lock:
            self.devices.append((device_id, password_hash, True))
            self.embedded.reload(list(self.devices))
        deadline = time.monotonic() + WAIT
        while not _can_connect(self, device_id, password):
            assert time.monotonic() < deadline, "broker did not reload its password file"
            time.sleep(0.05)


def _can_connect(b: BrokerInfo, user: str, password: str) -> bool:
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    c.username_pw_set(user, password)
    if b.tls_ca:
        c.tls_set(ca_certs=b.tls_ca)
    try:
        return bool(c.connect(b.host, b.port, 5) == 0 and _wait_connack(c))
    except (OSError, ssl.SSLError):
        return False
    finally:
        c.disconnect()
        c.loop_stop()


def _wait_connack(c: mqtt.Client) -> bool:
    ok = threading.Event()
    result: list[bool] = []
    c.on_connect = lambda _c, _u, _f, rc, _p: (result.append(not rc.is_failure), ok.set())
    c.loop_start()
    ok.wait(5)
    return bool(result and result[0])


@pytest.fixture(scope="session")
def mosquitto_installed() -> str:
    binary = mosquitto_binary()
    if binary is None or not shutil.which("mosquitto_pub") or not shutil.which("mosquitto_sub"):
        pytest.fail(
            "mosquitto and mosquitto-clients must be installed (apt-get install -y "
            "mosquitto mosquitto-clients; scripts/install-system.sh does it)"
        )
    return binary


@pytest.fixture(scope="session")
def tls_broker(
    tmp_path_factory: pytest.TempPathFactory, mosquitto_installed: str
) -> Iterator[BrokerInfo]:
    folder = tmp_path_factory.mktemp("mosq")
    tls = make_tls_files(folder / "tls")
    port = free_port()
    b = EmbeddedBroker(
        folder / "broker", Listener(port, "127.0.0.1", tls), platform_password=PLATFORM_PW
    )
    b.start()
    yield BrokerInfo("tls", "127.0.0.1", port, tls.cafile, "onecard-bridge", PLATFORM_PW, True, b)
    b.stop()


@pytest.fixture(scope="session")
def system_broker(mosquitto_installed: str) -> BrokerInfo:
    try:
        with socket.create_connection(("127.0.0.1", 1883), timeout=2):
            pass
    except OSError:
        pytest.fail("the machine's Mosquitto is not listening on 127.0.0.1:1883")
    return BrokerInfo("system", "127.0.0.1", 1883, None, "", "", False)


@pytest.fixture(params=["system", "tls"])
def broker(request: pytest.FixtureRequest) -> BrokerInfo:
    return request.getfixturevalue(f"{request.param}_broker")  # type: ignore[no-any-return]


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(SECRET)


@pytest.fixture
def start_bridge(
    session_factory: sessionmaker[Session], box: SecretBox
) -> Iterator[Callable[..., Bridge]]:
    started: list[Bridge] = []

    def _start(b: BrokerInfo, **kw: Any) -> Bridge:
        conn = Connection(
            b.host,
            b.port,
            b.platform_user,
            b.platform_password,
            b.tls_ca,
            client_id=f"br-{uuid.uuid4().hex[:10]}",
            share_group=kw.pop("group"),
        )
        bridge = Bridge(session_factory, conn, box=box, outbox_interval=0.1, **kw)
        checked_publish(bridge)
        bridge.start()
        assert bridge.subscribed.wait(WAIT), "bridge did not connect and subscribe"
        started.append(bridge)
        return bridge

    yield _start
    for bridge in started:
        bridge.stop()
    for bridge in started:
        assert not bridge.invalid_sent, bridge.invalid_sent  # type: ignore[attr-defined]
        assert bridge.valid_sent > 0  # type: ignore[attr-defined]


def checked_publish(bridge: Bridge) -> Bridge:
    """Validate every message the bridge sends against docs/asyncapi.yaml (`validate_message`);
    failures collect in ``bridge.invalid_sent``, successes count in ``bridge.valid_sent``."""
    original = bridge.publish
    bridge.invalid_sent = []  # type: ignore[attr-defined]
    bridge.valid_sent = 0  # type: ignore[attr-defined]

    def publish(name: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        try:
            validate_message(name, payload)
            bridge.valid_sent += 1  # type: ignore[attr-defined]
        except ProtocolError as err:
            bridge.invalid_sent.append(f"{name}: {err}")  # type: ignore[attr-defined]
        original(name, payload, qos=qos, retain=retain)

    bridge.publish = publish  # type: ignore[method-assign]
    return bridge


class DeviceClient:
    """A test terminal: its own credentials, subscribed to its down topics."""

    def __init__(self, b: BrokerInfo, device_id: str, password: str) -> None:
        self.device_id = device_id
        self.inbox: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        if b.acl:
            self.c.username_pw_set(device_id, password)
        if b.tls_ca:
            self.c.tls_set(ca_certs=b.tls_ca)
        self.c.will_set(
            f"oc/v1/{device_id}/state", b'{"v":1,"state":"offline"}', qos=0, retain=True
        )
        self.subscribed = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda *_a: self.subscribed.set()
        self.c.on_message = self._on_message
        self.c.connect(b.host, b.port, 30)
        self.c.loop_start()
        assert self.subscribed.wait(WAIT), f"{device_id} could not connect/subscribe"

    def _on_connect(self, c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        c.subscribe(f"oc/v1/{self.device_id}/down/#", qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        suffix = msg.topic.split("/", 3)[3]
        try:
            body = json.loads(msg.payload)
        except ValueError:
            body = {"raw": msg.payload.decode("utf-8", "replace")}
        self.inbox.put((suffix, body))

    def send(self, suffix: str, body: dict[str, Any] | bytes, *, retain: bool = False) -> Any:
        payload = body if isinstance(body, bytes) else json.dumps({"v": 1, **body}).encode()
        info = self.c.publish(f"oc/v1/{self.device_id}/{suffix}", payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT)
        return info

    def expect(
        self,
        suffix: str,
        pred: Callable[[dict[str, Any]], bool] = lambda _b: True,
        timeout: float = WAIT,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"{self.device_id}: no {suffix} message matching in time"
            try:
                got, body = self.inbox.get(timeout=left)
            except queue.Empty:
                continue
            if got == suffix and pred(body):
                return body

    def online(self, epoch: str = EPOCH, lists: dict[str, int] | None = None) -> dict[str, Any]:
        self.send("state", {"state": "online"}, retain=True)
        hello = {
            "kind": "pos",
            "firmware": "t1",
            "epoch": epoch,
            "max_seq": 0,
            "unsent": 0,
            "lists": lists or {},
            "config_version": 0,
            "device_time": DEVICE_TIME,
        }
        validate_message(f"oc/v1/{self.device_id}/up/hello", {"v": 1, **hello})
        self.send("up/hello", hello)
        return self.expect("down/ack")

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@dataclass
class Fleet:
    tenant: Tenant
    broker: BrokerInfo
    clients: list[DeviceClient]
    passwords: dict[str, str]

    def connect(self, device_id: str) -> DeviceClient:
        dc = DeviceClient(self.broker, device_id, self.passwords[device_id])
        self.clients.append(dc)
        return dc


@pytest.fixture
def fleet(
    make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session], now: dt.datetime
) -> Iterator[Callable[..., Fleet]]:
    fleets: list[Fleet] = []

    def _make(b: BrokerInfo, count: int, kind: str = "pos") -> Fleet:
        tenant = make_tenant()
        passwords = {}
        with session_factory() as s, tenant_scope(tenant.id):
            for _ in range(count):
                dev_id = f"d-{uuid.uuid4().hex[:12]}"
                d, pw = services.add_device(
                    s, services.NewDevice(dev_id, kind), actor=Actor.system("tests"), now=now
                )
                passwords[dev_id] = pw
                hashes_ = (dev_id, d.password_hash, pw)
                s.commit()
                b.register(hashes_[0], hashes_[1], hashes_[2])
        f = Fleet(tenant, b, [], passwords)
        fleets.append(f)
        return f

    yield _make
    for f in fleets:
        for c in f.clients:
            c.close()
