"""Soak: 500 simulated terminals against the real bridge, a private Mosquitto and the test
database, under outages, skewed clocks, duplicated and reordered uploads and power losses.

After the drain: nothing lost (platform records == records the fleet created, per device and in
total), nothing stored twice, no open gap on the platform, and the tenant's ledger verifies.
Runs on SQLite and on PostgreSQL (``ONECARD_TEST_DATABASE_URL``). Timeouts are failure bounds
only; the figures are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onecard.device_agents.protocol.codes import DeviceKind
from onecard.device_agents.runtime.mqtt import BrokerAddress
from onecard.device_agents.sim.fleet import Fleet, FleetSettings
from onecard.platform.actors import Actor
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices import ingest
from onecard.platform.devices.bridge import Bridge, Connection
from onecard.platform.devices.broker import PLATFORM_USER, EmbeddedBroker, Listener
from onecard.platform.devices.models import Device, DeviceRecord
from onecard.platform.devices.services import NewDevice, add_device, all_credentials
from onecard.platform.ledger.reconcile import verify
from onecard.platform.secrets import SecretBox
from onecard.platform.tenants.models import Tenant

pytestmark = pytest.mark.slow

DEVICES = 500
KINDS = (DeviceKind.POS, DeviceKind.DOOR)
FAULTS = frozenset({"offline", "skew", "duplicate", "reorder", "power-loss"})
OUTAGE_SHARE = 0.10  # terminals cut off for OUTAGE_S, tapping offline meanwhile
OUTAGE_S = 25.0
OFFLINE_TAPS_PER_S = 5.0  # a queue at the counter while the network is down
RUN_S = 40.0
# Failure bounds only (this machine is small and loaded); nothing asserts on speed.
CONNECT_BOUND = 180.0
DRAIN_BOUND = 300.0
PLATFORM_PW = "soak-platform-password"
SECRET = "soak-secret-key-0123456789abcdef"
SYS = Actor.system("soak")


def _register(
    sf: sessionmaker[Session], tenant: Tenant, now: datetime
) -> dict[str, tuple[str, str, DeviceKind | None]]:
    prefix = f"soak-{uuid.uuid4().hex[:8]}"
    creds: dict[str, tuple[str, str, DeviceKind | None]] = {}
    with sf() as s, tenant_scope(tenant.id):
        for i in range(DEVICES):
            kind = KINDS[i % len(KINDS)]
            device_id = f"{prefix}-{kind.value}-{i:04d}"
            _dev, password = add_device(
                s, NewDevice(device_id, kind.value, name=f"soak {i}"), actor=SYS, now=now
            )
            creds[device_id] = (device_id, password, kind)
        s.commit()
    return creds


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def soak_broker(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> Iterator[Callable[[], EmbeddedBroker]]:
    """A private Mosquitto with the platform's generated config (password file + ACL)."""
    started: list[EmbeddedBroker] = []

    def _start() -> EmbeddedBroker:
        with session_factory() as s:
            devices = all_credentials(s)
        broker = EmbeddedBroker(
            tmp_path / "mqtt",
            Listener(_free_port(), "127.0.0.1"),
            platform_password=PLATFORM_PW,
            devices=devices,
        )
        broker.start()
        started.append(broker)
        assert broker.kind == "mosquitto", "the soak needs mosquitto (apt-get install mosquitto)"
        return broker

    yield _start
    for b in started:
        b.stop()


def _wait(cond: Callable[[], bool], bound: float, what: str) -> float:
    started = time.monotonic()
    while not cond():
        assert time.monotonic() - started < bound, f"soak: {what} not reached in {bound:.0f} s"
        time.sleep(0.2)
    return time.monotonic() - started


def _platform_counts(sf: sessionmaker[Session], tenant_id: int) -> tuple[dict[str, int], int, int]:
    """(records per device id, total rows, distinct (device, epoch, seq))."""
    with sf() as s, tenant_scope(tenant_id):
        per = {
            row[0]: row[1]
            for row in s.execute(
                select(Device.device_id, func.count(DeviceRecord.id))
                .join(DeviceRecord, DeviceRecord.device_pk == Device.id)
                .group_by(Device.device_id)
            )
        }
        total = s.scalar(select(func.count(DeviceRecord.id))) or 0
        distinct = (
            s.scalar(
                select(func.count()).select_from(
                    select(DeviceRecord.device_pk, DeviceRecord.epoch, DeviceRecord.seq)
                    .distinct()
                    .subquery()
                )
            )
            or 0
        )
    return {k: int(v) for k, v in per.items()}, int(total), int(distinct)


def test_500_terminals_with_faults_lose_nothing_and_store_nothing_twice(
    session_factory: sessionmaker[Session],
    make_tenant: Callable[..., Tenant],
    now: datetime,
    tmp_path: Path,
    soak_broker: Callable[[], EmbeddedBroker],
    engine: object,
) -> None:
    dialect = getattr(getattr(engine, "dialect", None), "name", "?")
    tenant = make_tenant()
    creds = _register(session_factory, tenant, now)
    broker = soak_broker()
    port = broker.listener.port
    bridge = Bridge(
        session_factory,
        Connection(
            "127.0.0.1",
            port,
            PLATFORM_USER,
            PLATFORM_PW,
            client_id=f"soak-bridge-{uuid.uuid4().hex[:8]}",
            share_group=f"soak{uuid.uuid4().hex[:8]}",
        ),
        box=SecretBox(SECRET),
        outbox_interval=0.5,
    )
    bridge.start()
    fleet: Fleet | None = None
    t0 = time.monotonic()
    try:
        assert bridge.subscribed.wait(60), "bridge did not connect and subscribe"
        fleet = Fleet(
            FleetSettings(
                devices=DEVICES,
                kinds=KINDS,
                broker=BrokerAddress("127.0.0.1", port),
                folder=tmp_path / "fleet",
                faults=FAULTS,
                credentials=creds,
                tap_rate=0.2,
                fault_rate=0.004,
                seed=7,
                agent={"heartbeat_s": 15.0, "ack_timeout_s": 10.0},
            )
        ).start()
        f = fleet
        connect_s = _wait(lambda: f.online() == DEVICES, CONNECT_BOUND, "all terminals online")
        f.run(RUN_S / 3)

        # 10% of the terminals lose the network and keep serving offline.
        rng = random.Random(11)
        cut = rng.sample(range(DEVICES), int(DEVICES * OUTAGE_SHARE))

        def go_offline() -> None:
            for i in cut:
                f.terminals[i].link.go_offline()

        def offline_taps() -> None:
            for i in cut:
                t = f.terminals[i]
                if t.down_until is None and t.rng.random() < OFFLINE_TAPS_PER_S * f.loop.tick_s:
                    t._tap()

        def back_online() -> None:
            f.loop.remove_tick(offline_taps)
            for i in cut:
                t = f.terminals[i]
                if t.down_until is None:
                    t.link.go_online()

        f.loop.call(go_offline)
        f.loop.every_tick(offline_taps)
        f.run(OUTAGE_S)
        f.loop.call(back_online)
        f.run(max(0.0, RUN_S - RUN_S / 3 - OUTAGE_S))

        drain_started = time.monotonic()
        assert f.drain(timeout=DRAIN_BOUND), f"fleet did not drain: {f.totals()}"
        drain_s = time.monotonic() - drain_started
        totals = f.totals()
        created = f.loop.call(lambda: {t.device: t.counters.records_created for t in f.terminals})
    finally:
        if fleet is not None:
            fleet.stop()
        bridge.stop()
    elapsed = time.monotonic() - t0

    per_device, total, distinct = _platform_counts(session_factory, tenant.id)
    with session_factory() as s, tenant_scope(tenant.id):
        open_gaps = {
            d.device_id: gaps for d in s.scalars(select(Device)) if (gaps := ingest.gaps(s, d.id))
        }
        ledger = verify(s)

    expected = sum(created.values())
    print(
        f"\nsoak [{dialect}]: {DEVICES} terminals, {expected} records created, {total} stored, "
        f"{totals['duplicates_sent']} duplicate records sent, {totals['outages']} random outages "
        f"+ {len(cut)} cut for {OUTAGE_S:.0f} s, {totals['power_losses']} power losses, "
        f"{totals['reordered']} reordered batches, {totals['taps_online']} online taps, "
        f"{totals['taps_offline']} offline decisions; connect {connect_s:.1f} s, "
        f"drain {drain_s:.1f} s, total {elapsed:.1f} s, "
        f"{(total + totals['taps_online']) / elapsed:.0f} stored records+taps/s overall; "
        f"ledger entries {ledger.entries}, bridge counts {dict(bridge.counts)}"
    )
    assert expected > 1000, "the soak produced too few records to mean anything"
    assert totals["unsent"] == 0
    assert totals["records_acked"] == expected
    assert total == expected, f"lost or extra records: platform {total}, fleet {expected}"
    assert distinct == total, "a record identity is stored twice"
    wrong = {d: (per_device.get(d, 0), n) for d, n in created.items() if per_device.get(d, 0) != n}
    assert not wrong, f"per-device mismatch (platform, fleet): {dict(list(wrong.items())[:10])}"
    assert not open_gaps, f"open gaps: {dict(list(open_gaps.items())[:5])}"
    assert ledger.ok, ledger.problems
