"""Soak: 500 simulated terminals against the real bridge, a private Mosquitto and the test
database, under outages, skewed clocks, duplicated and reordered uploads and power losses.

The tenant runs the canteen the way ``onecard run`` sets it up (``onecard.embedded``): the
module enabled, a merchant, meal periods over the whole day, the POS terminals bound to the
merchant (free amount), cards with the UIDs the fleet presents and purses topped up (every
tenth one too little for many meals); the bridge loads the module registry, so an online POS
tap is decided by the canteen's hooks and a sale posts to the ledger. Doors have no module:
their taps are denied ``NO_HANDLER``.

After the drain: nothing lost (platform records == records the fleet created, per device and in
total), nothing stored twice, no open gap on the platform; every allowed online POS tap has
exactly one online canteen sale and one ledger entry (and a denied one neither), the merchant's
lines equal the sales, and the tenant's ledger verifies (every entry balances, cached balances
equal the journal, trial balance zero, no purse below zero) over a non-trivial number of
entries. Runs on SQLite and on PostgreSQL (``ONECARD_TEST_DATABASE_URL``). Timeouts are failure
bounds only; the figures are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onecard.device_agents.protocol.codes import DeviceKind
from onecard.device_agents.runtime.mqtt import BrokerAddress
from onecard.device_agents.sim.fleet import Fleet, FleetSettings
from onecard.embedded import MEALS
from onecard.modules.canteen import rules
from onecard.modules.canteen import setup as canteen
from onecard.modules.canteen.checks import tap_sale_problems
from onecard.modules.canteen.models import Merchant, Sale
from onecard.modules.canteen.services import KEY as CANTEEN
from onecard.modules.canteen.tapflow import POSTING_KEY_PREFIX
from onecard.platform.actors import Actor
from onecard.platform.cards.lifecycle import NewCard, issue_card
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices import ingest
from onecard.platform.devices.bridge import Bridge, Connection
from onecard.platform.devices.broker import PLATFORM_USER, EmbeddedBroker
from onecard.platform.devices.models import Device, DeviceRecord, DeviceTap
from onecard.platform.devices.services import NewDevice, add_device
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.models import Account, Entry, Line
from onecard.platform.ledger.reconcile import LedgerReport, verify
from onecard.platform.people.schemas import PersonCreate
from onecard.platform.people.services import create_person
from onecard.platform.registry import Registry
from onecard.platform.secrets import SecretBox
from onecard.platform.tenants.models import Site, Tenant
from onecard.platform.tenants.services import create_site, set_module_enabled

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
CARDS = 300  # the fleet presents UIDs 10000000.. of this many cards, all issued
TOP_UP_FEN = 200_000  # far more than a card spends in the soak
LOW_TOP_UP_FEN = 1_000  # every LOW_EVERY-th card: a meal or two, then INSUFFICIENT_FUNDS
LOW_EVERY = 10
MIN_SALES = 50  # fewer online sales than this and the ledger check means little


@dataclass(frozen=True)
class World:
    """The soak tenant: its merchant's account and the fleet's credentials."""

    tenant_id: int
    merchant_account_id: int
    credentials: dict[str, tuple[str, str, DeviceKind | None]]


def _canteen_world(sf: sessionmaker[Session], tenant: Tenant, now: datetime) -> World:
    """Canteen enabled and set up as ``onecard run`` does, the terminals and the cards."""
    with sf() as s, tenant_scope(tenant.id):
        actor = Actor.system("soak", tenant_id=tenant.id)
        set_module_enabled(s, CANTEEN, True, actor=actor, now=now)
        site = create_site(s, "soak", "Soak campus", "Asia/Shanghai", actor=actor, now=now)
        merchant = canteen.create_merchant(s, "soak-1", "Soak canteen", site, actor=actor, now=now)
        periods = [rules.MealPeriod(k, a, b) for k, a, b in MEALS]  # the whole day
        canteen.set_meal_periods(s, site, periods, actor=actor, now=now)
        canteen.set_rule(s, "student", rules.HolderRule(), actor=actor, now=now)  # no limits
        creds = _register(s, merchant, site, actor, now)
        _issue_cards(s, actor, now)
        s.commit()
        return World(tenant.id, merchant.account_id, creds)


def _register(
    s: Session, merchant: Merchant, site: Site, actor: Actor, now: datetime
) -> dict[str, tuple[str, str, DeviceKind | None]]:
    """DEVICES terminals: POS bound to the merchant (module canteen), doors without a module."""
    prefix = f"soak-{uuid.uuid4().hex[:8]}"
    creds: dict[str, tuple[str, str, DeviceKind | None]] = {}
    for i in range(DEVICES):
        kind = KINDS[i % len(KINDS)]
        device_id = f"{prefix}-{kind.value}-{i:04d}"
        pos = kind is DeviceKind.POS
        spec = NewDevice(
            device_id,
            kind.value,
            module=CANTEEN if pos else None,
            site_id=site.id if pos else None,
            name=f"soak {i}",
        )
        device, password = add_device(s, spec, actor=actor, now=now)
        if pos:
            canteen.add_pos(s, merchant, device, mode=rules.Mode.FREE, actor=actor, now=now)
        creds[device_id] = (device_id, password, kind)
    return creds


def _issue_cards(s: Session, actor: Actor, now: datetime) -> None:
    """CARDS students with the UIDs the fleet presents, purses topped up in cash."""
    for n in range(CARDS):
        person = create_person(
            s,
            PersonCreate(person_no=f"S{n:05d}", name=f"Soak {n}", identity_class="student"),
            actor=actor,
            now=now,
        )
        card = NewCard(card_no=f"9{n:07d}", uid=f"{0x10000000 + n:08X}")
        issue_card(s, person, card, actor=actor, now=now)
        amount = LOW_TOP_UP_FEN if n % LOW_EVERY == 0 else TOP_UP_FEN
        ops.top_up(s, person.id, amount, channel="cash", actor=actor, now=now)


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


@dataclass(frozen=True)
class Books:
    """What the platform holds after the soak: the ledger report and the canteen's taps."""

    ledger: LedgerReport
    sales: int
    pos_denied: Counter[str]
    door_reasons: Counter[str]
    problems: tuple[str, ...]


def _books(sf: sessionmaker[Session], world: World) -> Books:
    """Verify the ledger and match every canteen POS tap with its sale and entry."""
    with sf() as s, tenant_scope(world.tenant_id):
        taps = _taps_by_module(s)
        pos = taps.get(CANTEEN, [])
        problems = tap_sale_problems(s, pos) + _merchant_problems(s, world.merchant_account_id)
        return Books(
            ledger=verify(s),
            sales=sum(1 for _d, t in pos if t.allow),
            pos_denied=Counter(t.reason for _d, t in pos if not t.allow),
            door_reasons=Counter(t.reason for _d, t in taps.get(None, [])),
            problems=tuple(problems),
        )


def _taps_by_module(s: Session) -> dict[str | None, list[tuple[str, DeviceTap]]]:
    """Every decided online tap with its device id, by the device's module."""
    out: dict[str | None, list[tuple[str, DeviceTap]]] = {}
    rows = s.execute(
        select(Device.module, Device.device_id, DeviceTap).join(
            DeviceTap, DeviceTap.device_pk == Device.id
        )
    )
    for module, device_id, tap in rows:
        out.setdefault(module, []).append((device_id, tap))
    return out


def _merchant_problems(s: Session, merchant_account_id: int) -> list[str]:
    """The merchant's lines in the tap entries add up to the online sales' amounts."""
    account = s.get(Account, merchant_account_id)
    assert account is not None
    lines = s.scalar(
        select(func.coalesce(func.sum(Line.amount_fen), 0))
        .join(Entry, Entry.id == Line.entry_id)
        .where(Line.account_id == account.id, Entry.idempotency_key.startswith(POSTING_KEY_PREFIX))
    )
    sold = s.scalar(
        select(func.coalesce(func.sum(Sale.amount_fen), 0)).where(Sale.source == "online")
    )
    owed = int(lines or 0) * account.sign
    return [] if owed == int(sold or 0) else [f"merchant owed {owed}, online sales {sold}"]


def test_500_terminals_with_faults_lose_nothing_and_store_nothing_twice(
    session_factory: sessionmaker[Session],
    make_tenant: Callable[..., Tenant],
    now: datetime,
    tmp_path: Path,
    soak_broker: Callable[[str], EmbeddedBroker],
    engine: object,
) -> None:
    dialect = getattr(getattr(engine, "dialect", None), "name", "?")
    world = _canteen_world(session_factory, make_tenant(), now)
    broker = soak_broker(PLATFORM_PW)
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
        registry=Registry.load(),  # the installed modules: canteen decides the POS taps
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
                credentials=world.credentials,
                cards=CARDS,
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

    per_device, total, distinct = _platform_counts(session_factory, world.tenant_id)
    with session_factory() as s, tenant_scope(world.tenant_id):
        open_gaps = {
            d.device_id: gaps for d in s.scalars(select(Device)) if (gaps := ingest.gaps(s, d.id))
        }
    books = _books(session_factory, world)
    bridge_errors = {k: n for k, n in bridge.counts.items() if k[1] == "error"}

    expected = sum(created.values())
    print(
        f"\nsoak [{dialect}]: {DEVICES} terminals, {expected} records created, {total} stored, "
        f"{totals['duplicates_sent']} duplicate records sent, {totals['outages']} random outages "
        f"+ {len(cut)} cut for {OUTAGE_S:.0f} s, {totals['power_losses']} power losses, "
        f"{totals['reordered']} reordered batches, {totals['taps_online']} online taps, "
        f"{totals['taps_offline']} offline decisions; connect {connect_s:.1f} s, "
        f"drain {drain_s:.1f} s, total {elapsed:.1f} s, "
        f"{(total + totals['taps_online']) / elapsed:.0f} stored records+taps/s overall; "
        f"{books.sales} online canteen sales, POS denials {dict(books.pos_denied)}, "
        f"door taps {dict(books.door_reasons)}; ledger {books.ledger.entries} entries, "
        f"{books.ledger.lines} lines; bridge counts {dict(bridge.counts)}"
    )
    assert expected > 1000, "the soak produced too few records to mean anything"
    assert totals["unsent"] == 0
    assert totals["records_acked"] == expected
    assert total == expected, f"lost or extra records: platform {total}, fleet {expected}"
    assert distinct == total, "a record identity is stored twice"
    wrong = {d: (per_device.get(d, 0), n) for d, n in created.items() if per_device.get(d, 0) != n}
    assert not wrong, f"per-device mismatch (platform, fleet): {dict(list(wrong.items())[:10])}"
    assert not open_gaps, f"open gaps: {dict(list(open_gaps.items())[:5])}"
    assert not bridge_errors, f"the bridge failed on messages: {bridge_errors}"
    assert books.sales >= MIN_SALES, f"only {books.sales} online sales: the ledger check is thin"
    assert not books.problems, books.problems[:10]
    assert set(books.pos_denied) <= {"INSUFFICIENT_FUNDS"}, books.pos_denied
    assert set(books.door_reasons) == {"NO_HANDLER"}, books.door_reasons
    assert books.ledger.entries >= CARDS + books.sales  # the top-ups and the online sales
    assert books.ledger.ok, books.ledger.problems[:10]
