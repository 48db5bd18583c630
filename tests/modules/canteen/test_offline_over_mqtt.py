"""Offline canteen sales over MQTT, end to end, with every part real.

A fresh tenant runs the canteen (a merchant, meal periods over the whole day, staff allowed
15.00 and two sales a day offline). Two POS devices of that merchant get their configuration
bundle (zone, meal periods, offline allowance) signed by the platform, and their record MAC keys
from the key service the way an operator provisions them: ``onecard canteen pos-key`` prints
each key wrapped under the transport key, and the agent unwraps it with the transport key the
custodians assembled (what ``onecard agent --pos-key ... --transport-key ...`` does). A private
Mosquitto with the generated password file and ACL, the real bridge (with the module registry,
so canteen's hooks run) and two real agents with the POS personality run on the test database.

The story (:func:`story`, run once for the module): both POS lose the network; each sells 12.00
to the same card, within its own allowance, but 24.00 together is over the card's 15.00; POS A
also sells 8.00 to a second card and refuses a third sale to the first (its own allowance), and
the 8.00 record is altered in A's store after A MACed it. Both come back online; once the
frozen card's blacklist has reached them, B presents that card again, online. A's batch is then
published again. The tests read what the story left. Runs on SQLite and on PostgreSQL
(``ONECARD_TEST_DATABASE_URL``); the waits are failure bounds only.
"""

from __future__ import annotations

import json
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onecard.config import KeysSettings
from onecard.device_agents.protocol.blacklist import credential_key
from onecard.device_agents.protocol.bundles import public_key_from_hex
from onecard.device_agents.protocol.codec import encode
from onecard.device_agents.protocol.codes import CredentialKind, DeviceKind, ReasonCode
from onecard.device_agents.protocol.messages import RecordsBatch
from onecard.device_agents.runtime.agent import AgentSettings, LocalDecision, Presented
from onecard.device_agents.runtime.host import AgentHost
from onecard.device_agents.runtime.mqtt import BrokerAddress
from onecard.device_agents.runtime.personality import load_personality
from onecard.device_agents.runtime.pos_terminal import PosTerminal, read_pos_key
from onecard.embedded import MEALS
from onecard.keys.algorithms import Algorithm
from onecard.keys.softhsm import combine_components
from onecard.modules.canteen import cases, cli, terminalkeys
from onecard.modules.canteen import setup as canteen
from onecard.modules.canteen.models import Merchant, Sale
from onecard.modules.canteen.offline import OFFLINE_CODE
from onecard.modules.canteen.rules import Allowance, HolderRule, MealPeriod, Mode
from onecard.platform.actors import Actor
from onecard.platform.cards import blacklist
from onecard.platform.cards.keyring import Keyring
from onecard.platform.cards.lifecycle import NewCard, issue_card
from onecard.platform.cards.models import Card
from onecard.platform.clock import utcnow
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices import bundles
from onecard.platform.devices.bridge import Bridge, Connection
from onecard.platform.devices.broker import EmbeddedBroker, Listener, mosquitto_binary
from onecard.platform.devices.models import Device, DeviceRecord
from onecard.platform.devices.services import NewDevice, add_device
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import balance_of, holder_account
from onecard.platform.ledger.models import Account, Entry
from onecard.platform.people.schemas import PersonCreate
from onecard.platform.people.services import create_person
from onecard.platform.registry import Registry
from onecard.platform.secrets import SecretBox
from onecard.platform.tenants.services import create_site, create_tenant, set_module_enabled
from onecard.testing.cardkit import KEK
from onecard.testing.fixtures import unique

PLATFORM_PW = "platform-offline-password"
SECRET = "offline-mqtt-secret-0123456789ab"
KEK_VAR = "CANTEEN_MQTT_TEST_KEK"
WAIT = 45.0  # a failure bound only
ZONE = "Asia/Shanghai"
ALLOWANCE = Allowance(amount_fen=1500, count=2)
SALE_FEN, OTHER_FEN, FORGED_FEN = 1200, 800, 80
SUBSIDY_FEN, PURSE_FEN = 300, 5000
POS_SETTINGS = {
    "mode": "free",
    "lang": "zh",
    "zone": ZONE,
    "meal_periods": [
        {"key": k, "starts": a.isoformat(), "ends": b.isoformat()} for k, a, b in MEALS
    ],
    "offline": {"enabled": True, "amount_fen": ALLOWANCE.amount_fen, "count": ALLOWANCE.count},
}


@dataclass
class Terminal:
    """One POS: its device, its credentials and, while the story runs, its agent."""

    device_id: str
    password: str
    password_hash: str
    pos_id: int
    config_version: int
    host: AgentHost | None = None

    @property
    def agent(self) -> AgentHost:
        assert self.host is not None, "the agent is not running"
        return self.host


@dataclass(frozen=True)
class Holder:
    card_id: int
    card_no: str
    uid: str
    person_id: int


@dataclass
class World:
    tenant_id: int
    slug: str
    merchant_account_id: int
    a: Terminal
    b: Terminal
    shared: Holder  # the card both POS sell to
    other: Holder  # the card of the altered sale
    public_key_hex: str


@dataclass
class Story:
    """What happened, as the terminals and the platform showed it."""

    world: World
    decisions: dict[str, LocalDecision] = field(default_factory=dict)
    created: dict[str, int] = field(default_factory=dict)  # records each agent stored
    blacklisted_on: dict[str, bool] = field(default_factory=dict)
    counts_before_replay: dict[str, Any] = field(default_factory=dict)
    replay_ack: dict[str, Any] = field(default_factory=dict)


# --- the world ----------------------------------------------------------------------------------


def _holder(s: Session, actor: Actor, now: datetime, *, subsidy: int) -> Holder:
    person = create_person(
        s,
        PersonCreate(person_no=unique("P"), name="李四", identity_class="staff"),
        actor=actor,
        now=now,
    )
    uid = f"{random.getrandbits(32):08X}"
    card_no = f"6222{uuid.uuid4().int % 10**8:08d}"
    card = issue_card(s, person, NewCard(card_no=card_no, uid=uid), actor=actor, now=now)
    ops.top_up(s, person.id, PURSE_FEN, channel="cash", actor=actor, now=now)
    if subsidy:
        ops.grant_subsidy(s, person.id, subsidy, actor=actor, now=now)
    return Holder(card.id, card_no, uid, person.id)


def _terminal(
    s: Session, merchant: Merchant, site_id: int, box: SecretBox, actor: Actor, now: datetime
) -> Terminal:
    """A POS of ``merchant`` with its signed configuration bundle built."""
    device_id = f"pos-{uuid.uuid4().hex[:10]}"
    spec = NewDevice(device_id, "pos", module="canteen", site_id=site_id, settings=POS_SETTINGS)
    device, password = add_device(s, spec, actor=actor, now=now)
    pos = canteen.add_pos(s, merchant, device, mode=Mode.FREE, actor=actor, now=now)
    bundle = bundles.build(s, device, {}, box=box, actor=actor, now=now)
    return Terminal(device_id, password, device.password_hash, pos.id, bundle.version)


def _world(sf: sessionmaker[Session], box: SecretBox) -> World:
    """The canteen of the module docstring, committed (the bridge has sessions of its own)."""
    now = utcnow()
    with sf() as s:
        tenant = create_tenant(
            s, unique("off"), "Offline canteen", actor=Actor.system("t"), now=now
        )
        with tenant_scope(tenant.id):
            actor = Actor.system("tests", tenant_id=tenant.id)
            set_module_enabled(s, "canteen", True, actor=actor, now=now)
            site = create_site(s, unique("S"), "North campus", ZONE, actor=actor, now=now)
            merchant = canteen.create_merchant(
                s, unique("m"), "Canteen 1", site, actor=actor, now=now
            )
            periods = [MealPeriod(k, a, b) for k, a, b in MEALS]
            canteen.set_meal_periods(s, site, periods, actor=actor, now=now)
            canteen.set_rule(s, "staff", HolderRule(), offline=ALLOWANCE, actor=actor, now=now)
            a, b = (_terminal(s, merchant, site.id, box, actor, now) for _ in range(2))
            shared = _holder(s, actor, now, subsidy=SUBSIDY_FEN)
            other = _holder(s, actor, now, subsidy=0)
            key_hex = bundles.public_key_hex(s, box, now=now)
            s.commit()
            return World(tenant.id, tenant.slug, merchant.account_id, a, b, shared, other, key_hex)


@contextmanager
def _keyring(folder: Path) -> Iterator[Keyring]:
    """The keyring ``[keys]`` names: ``onecard canteen pos-key`` opens the same store, and the
    bridge's canteen hook verifies with it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)  # no ./config.toml
        mp.setenv(KEK_VAR, KEK.hex())
        ring = Keyring.from_settings(KeysSettings(store=str(folder / "k.store"), kek_env=KEK_VAR))
        terminalkeys.install_keyring(ring)
        try:
            yield ring
        finally:
            terminalkeys.install_keyring(None)


def _key_document(world: World, t: Terminal, database_url: str, folder: Path) -> Path:
    """``onecard canteen pos-key`` for ``t``: the key wrapped under the transport key."""
    env = {
        "ONECARD_CONFIG": None,
        "ONECARD_DATABASE__URL": database_url,
        "ONECARD_KEYS__STORE": str(folder / "k.store"),
        "ONECARD_KEYS__KEK_ENV": KEK_VAR,
    }
    args = ["--tenant", world.slug, "--device", t.device_id]
    result = CliRunner().invoke(cli.pos_key_command, args, env=env)
    assert result.exit_code == 0, result.output
    path = folder / f"{t.device_id}.key.json"
    path.write_text(result.output, encoding="utf-8")
    return path


def _transport_key_hex(
    world: World, document: Path, keyring: Keyring, sf: sessionmaker[Session]
) -> str:
    """The transport key the custodians assemble from their components (hex)."""
    wrapped, now = json.loads(document.read_text(encoding="utf-8")), utcnow()
    with sf() as s, tenant_scope(world.tenant_id):
        service = keyring.service(
            s, actor=Actor.system("custodians", tenant_id=world.tenant_id), now=now
        )
        parts = service.export_components(
            module="canteen",
            tenant_id=world.tenant_id,
            application=terminalkeys.key_application(s, now=now),
            key_name="TK",
            version=wrapped["transport"]["version"],
        )
        s.commit()
    return combine_components(Algorithm(wrapped["keys"][0]["algorithm"]), parts).hex()


# --- the running parts --------------------------------------------------------------------------


def _wait(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {WAIT:.0f} s"
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _broker_and_bridge(
    world: World, sf: sessionmaker[Session], box: SecretBox, folder: Path
) -> Iterator[int]:
    """A private Mosquitto (password file + ACL) and the real bridge; yields the port."""
    port = _free_port()
    devices = [(t.device_id, t.password_hash, True) for t in (world.a, world.b)]
    broker = EmbeddedBroker(
        folder / "broker",
        Listener(port, "127.0.0.1"),
        platform_password=PLATFORM_PW,
        devices=devices,
    )
    conn = Connection(
        "127.0.0.1",
        port,
        "onecard-bridge",
        PLATFORM_PW,
        client_id=f"br-{uuid.uuid4().hex[:10]}",
        share_group=f"off{uuid.uuid4().hex[:8]}",
    )
    bridge = Bridge(sf, conn, box=box, registry=Registry.load(), outbox_interval=0.1)
    broker.start()
    try:
        assert broker.kind == "mosquitto"
        bridge.start()
        assert bridge.subscribed.wait(WAIT), "bridge did not connect and subscribe"
        yield port
    finally:
        bridge.stop()
        broker.stop()


def _start_agent(
    t: Terminal, world: World, port: int, folder: Path, key: Path, transport_hex: str
) -> AgentHost:
    """A POS agent with its key installed, online, its configuration bundle applied."""
    host = AgentHost.open(
        AgentSettings(device_id=t.device_id, kind=DeviceKind.POS, tap_timeout_s=10.0),
        folder / t.device_id,
        BrokerAddress("127.0.0.1", port, username=t.device_id, password=t.password),
        public_key=public_key_from_hex(world.public_key_hex),
        personality=load_personality,
    )
    pos = host.agent.personality
    assert isinstance(pos, PosTerminal)
    pos.install_key(read_pos_key(key, transport_hex))  # what `onecard agent --pos-key` does
    t.host = host.start()
    assert host.wait_online(WAIT), f"{t.device_id} did not come online"
    _wait(
        lambda: host.loop.call(lambda: host.agent.downlink.config_version) == t.config_version,
        f"{t.device_id} applying its configuration bundle",
    )
    return host


# --- acting on the terminals ----------------------------------------------------------------


def _sell(t: Terminal, holder: Holder, fen: int) -> LocalDecision:
    return t.agent.tap(Presented.uid(holder.uid, fen), timeout=WAIT)


def _network(t: Terminal, *, up: bool) -> None:
    host = t.agent
    host.loop.call(host.link.go_online if up else host.link.go_offline)
    _wait(lambda: host.loop.call(lambda: host.agent.online) is up, f"{t.device_id} online={up}")


def _alter_stored(t: Terminal, seq: int, **changes: Any) -> None:
    """Change a record in the POS's own store after the POS MACed it."""
    store = t.agent.agent.store

    def edit() -> None:
        where = (store.device, store.epoch, seq)
        with store.transaction() as conn:
            (body,) = conn.execute(
                "SELECT body FROM record WHERE device=? AND epoch=? AND seq=?", where
            ).fetchone()
            altered = json.dumps({**json.loads(body), **changes})
            conn.execute(
                "UPDATE record SET body=? WHERE device=? AND epoch=? AND seq=?", (altered, *where)
            )

    t.agent.loop.call(edit)


def _stored_batch(t: Terminal) -> bytes:
    """The ``up/records`` payload of every record the POS still holds."""
    store = t.agent.agent.store
    records = t.agent.loop.call(lambda: store.records())
    return encode(RecordsBatch(epoch=store.epoch, records=tuple(records)))


def _publish_as(t: Terminal, port: int, payload: bytes) -> dict[str, Any]:
    """Publish ``payload`` on ``t``'s ``up/records`` from a second connection with ``t``'s
    credentials (a duplicated delivery); the platform's ``down/ack`` to it."""
    acks: queue.Queue[dict[str, Any]] = queue.Queue()
    subscribed = threading.Event()
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"replay-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    c.username_pw_set(t.device_id, t.password)
    c.on_connect = lambda cl, *_a: cl.subscribe(f"oc/v1/{t.device_id}/down/ack", qos=1)
    c.on_subscribe = lambda *_a: subscribed.set()
    c.on_message = lambda _c, _u, msg: acks.put(json.loads(msg.payload))
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    try:
        assert subscribed.wait(WAIT), "the replaying connection could not subscribe"
        c.publish(f"oc/v1/{t.device_id}/up/records", payload, qos=1).wait_for_publish(WAIT)
        return acks.get(timeout=WAIT)
    finally:
        c.disconnect()
        c.loop_stop()


# --- what the platform holds ----------------------------------------------------------------


def _counts(sf: sessionmaker[Session], world: World) -> dict[str, Any]:
    """Records per device, canteen sales and offline-sale entries of the tenant."""
    with sf() as s, tenant_scope(world.tenant_id):
        rows = s.execute(
            select(Device.device_id, func.count(DeviceRecord.id))
            .join(DeviceRecord, DeviceRecord.device_pk == Device.id)
            .group_by(Device.device_id)
        )
        return {
            "records": {device: int(n) for device, n in rows},
            "sales": s.scalar(select(func.count(Sale.id))),
            "entries": s.scalar(select(func.count(Entry.id)).where(Entry.code == OFFLINE_CODE)),
        }


def _holds_lost_card(t: Terminal, holder: Holder) -> bool:
    key = credential_key(CredentialKind.UID, holder.uid)
    agent = t.agent.agent
    return bool(t.agent.loop.call(lambda: key in agent.lists.get("blacklist", ())))


def _unsent(t: Terminal) -> int:
    return int(t.agent.loop.call(t.agent.agent.store.unsent_count))


# --- the story ------------------------------------------------------------------------------


def _offline_sales(story: Story) -> None:
    world, a, b = story.world, story.world.a, story.world.b
    for t in (a, b):
        _network(t, up=False)
    story.decisions["a_shared"] = _sell(a, world.shared, SALE_FEN)
    story.decisions["b_shared"] = _sell(b, world.shared, SALE_FEN)
    story.decisions["a_other"] = _sell(a, world.other, OTHER_FEN)
    story.decisions["a_shared_again"] = _sell(a, world.shared, SALE_FEN)
    other_seq = story.decisions["a_other"].seq
    assert other_seq is not None
    _alter_stored(a, other_seq, amount=FORGED_FEN)


def _back_online(story: Story, sf: sessionmaker[Session], port: int) -> None:
    world, a, b = story.world, story.world.a, story.world.b
    replay = _stored_batch(a)
    story.created = {t.device_id: t.agent.agent.counters.records_created for t in (a, b)}
    for t in (a, b):
        _network(t, up=True)
    _wait(lambda: _unsent(a) == _unsent(b) == 0, "both POS acknowledged")
    _wait(lambda: _counts(sf, world)["sales"] == 3, "three sales recorded")
    for t in (a, b):
        _wait(lambda t=t: _holds_lost_card(t, world.shared), f"{t.device_id} blacklist")
        story.blacklisted_on[t.device_id] = True
    story.decisions["b_shared_online"] = _sell(b, world.shared, SALE_FEN)
    story.counts_before_replay = _counts(sf, world)
    story.replay_ack = _publish_as(a, port, replay)


@pytest.fixture(scope="module")
def story(
    session_factory: sessionmaker[Session], database_url: str, tmp_path_factory: Any
) -> Story:
    """The module docstring's story, run once; the running parts are stopped afterwards."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto must be installed (apt-get install -y mosquitto)")
    folder, box = tmp_path_factory.mktemp("offline-mqtt"), SecretBox(SECRET)
    world = _world(session_factory, box)
    with _keyring(folder) as keyring:
        keys = [_key_document(world, t, database_url, folder) for t in (world.a, world.b)]
        transports = [_transport_key_hex(world, k, keyring, session_factory) for k in keys]
        with _broker_and_bridge(world, session_factory, box, folder) as port:
            try:
                for t, key, tk in zip((world.a, world.b), keys, transports, strict=True):
                    _start_agent(t, world, port, folder / "agents", key, tk)
                told = Story(world)
                _offline_sales(told)
                _back_online(told, session_factory, port)
            finally:
                for t in (world.a, world.b):
                    if t.host is not None:
                        t.host.stop()
    return told


@pytest.fixture
def db(session_factory: sessionmaker[Session], story: Story) -> Iterator[Session]:
    """A session in the story's tenant."""
    with session_factory() as s, tenant_scope(story.world.tenant_id):
        yield s


def _posted_sales(db: Session, holder: Holder) -> list[Sale]:
    stmt = select(Sale).where(Sale.card_no == holder.card_no, Sale.entry_id.is_not(None))
    return list(db.scalars(stmt.order_by(Sale.entry_id)))


def _balances(db: Session, story: Story, holder: Holder) -> dict[str, int]:
    now, merchant = utcnow(), db.get(Account, story.world.merchant_account_id)
    assert merchant is not None
    return {
        "subsidy": balance_of(db, holder_account(db, holder.person_id, ops.SUBSIDY, now=now)),
        "purse": balance_of(db, holder_account(db, holder.person_id, ops.PURSE, now=now)),
        "merchant": balance_of(db, merchant),
    }


# --- the tests ------------------------------------------------------------------------------


def test_each_pos_sells_alone_within_its_own_allowance_and_says_so(story):
    d = story.decisions

    assert [(d[k].allow, d[k].online, d[k].seq) for k in ("a_shared", "b_shared", "a_other")] == [
        (True, False, 1),
        (True, False, 1),
        (True, False, 2),
    ]
    assert (d["a_shared"].display, d["a_shared"].beep) == ("消费成功 ¥12.00", "ok")
    refused = d["a_shared_again"]  # 24.00 on A alone would pass the card's 15.00
    assert (refused.allow, refused.reason, refused.detail) == (
        False,
        ReasonCode.OFFLINE_NOT_ALLOWED,
        "offline_amount_exceeded",
    )
    assert (refused.display, refused.beep) == ("超出脱机限额 ¥12.00", "deny")


def test_every_record_is_stored_exactly_once_even_when_delivered_again(story, session_factory):
    world = story.world
    made = {world.a.device_id: 3, world.b.device_id: 1}  # A: two sales and a refusal

    assert story.created == made
    assert story.counts_before_replay["records"] == made
    assert story.replay_ack["acked_upto"] == 3
    assert _counts(session_factory, world) == story.counts_before_replay


def test_the_sales_are_posted_subsidy_first(story, db):
    shared = story.world.shared

    sales = _posted_sales(db, shared)

    # 12.00 + 12.00 from subsidy 3.00 and purse 50.00: the first sale takes the whole
    # subsidy and 9.00 of the purse, the second 12.00 of the purse.
    assert [(s.amount_fen, s.subsidy_fen, s.purse_fen, s.source) for s in sales] == [
        (1200, 300, 900, "offline"),
        (1200, 0, 1200, "offline"),
    ]
    assert {s.pos_id for s in sales} == {story.world.a.pos_id, story.world.b.pos_id}
    assert _balances(db, story, shared) == {"subsidy": 0, "purse": 2900, "merchant": 2400}


def test_the_card_over_its_allowance_is_frozen_with_a_reconciliation_case(story, db):
    world = story.world

    [case] = cases.open_cases(db, world.shared.card_no)
    card = db.get(Card, world.shared.card_id)

    assert (case.kind, case.detail["reason"], case.over_fen) == (
        "offline_overspend",
        "offline_amount_exceeded",
        900,  # 24.00 sold against an allowance of 15.00
    )
    assert case.detail["devices"] == sorted([world.a.pos_id, world.b.pos_id])
    assert card is not None
    assert card.status == "frozen"
    assert blacklist.history(db, card.id)[-1].reason == "canteen_overspend"


def test_the_frozen_cards_blacklist_reaches_both_pos_and_its_next_tap_is_refused(story):
    world = story.world
    online = story.decisions["b_shared_online"]

    assert story.blacklisted_on == {world.a.device_id: True, world.b.device_id: True}
    assert (online.online, online.allow, online.reason) == (True, False, ReasonCode.CARD_FROZEN)
    assert (online.display, online.beep) == ("此卡已挂失或冻结 ¥12.00", "deny")


def test_a_sale_altered_after_its_mac_is_stored_flagged_and_not_posted(story, db):
    other = story.world.other

    [sale] = db.scalars(select(Sale).where(Sale.card_no == other.card_no)).all()
    [case] = cases.open_cases(db, other.card_no)
    card = db.get(Card, other.card_id)

    assert (sale.amount_fen, sale.entry_id, "bad_mac" in sale.flags) == (FORGED_FEN, None, True)
    assert case.kind == "bad_mac"
    assert card is not None
    assert card.status == "active"
    assert _balances(db, story, other)["purse"] == PURSE_FEN
