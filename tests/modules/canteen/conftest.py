"""A canteen world for the worked examples: a site in Asia/Shanghai with breakfast, lunch and
dinner, one merchant with a fixed-price POS and a free-amount POS, holders with purses, a key
service of the test's own, and POS terminals provisioned by it that upload through the
platform's record ingest and canteen's ``onecard_records_stored``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.keys import algorithms as alg
from onecard.keys.hsm import WrappedKeySet
from onecard.keys.service import KeyService
from onecard.keys.softhsm import SoftHsm, combine_components
from onecard.modules.canteen import setup, terminalkeys
from onecard.modules.canteen.models import Merchant, Pos
from onecard.modules.canteen.pos import OfflinePos
from onecard.modules.canteen.rules import MealPeriod, Mode
from onecard.platform.actors import Actor
from onecard.platform.cards.keyring import Keyring
from onecard.platform.cards.models import Card
from onecard.platform.devices import ingest
from onecard.platform.devices.models import Device
from onecard.platform.devices.services import NewDevice, add_device, resolve
from onecard.platform.devices.wire import decode_records
from onecard.platform.errors import OneCardError
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import balance_of, holder_account
from onecard.platform.ledger.models import Account, Entry, Line
from onecard.platform.registry import Registry
from onecard.platform.tenants.models import Site
from onecard.platform.tenants.services import create_site
from onecard.testing.cardkit import KEK
from onecard.testing.fixtures import unique

ZONE = "Asia/Shanghai"
PERIODS = (
    MealPeriod("breakfast", time(6, 30), time(9, 0)),
    MealPeriod("lunch", time(11, 0), time(13, 30)),
    MealPeriod("dinner", time(17, 0), time(19, 30)),
)
FIXED_PRICES = {"breakfast": 500, "lunch": 1200, "dinner": 1000}


def shanghai(hh: int, mm: int = 0, day: int = 1) -> datetime:
    """2026-09-<day> hh:mm in Shanghai (UTC+8, no DST) as aware UTC."""
    return datetime(2026, 9, day, hh, mm, tzinfo=ZoneInfo(ZONE)).astimezone(UTC)


@dataclass
class World:
    session: Session
    actor: Actor
    site: Site
    merchant: Merchant
    fixed: Pos
    free: Pos
    make_pos: Callable[..., Pos]
    holder: Callable[..., Card]
    failures: list[OneCardError] = field(default_factory=list)

    def balances(self, card: Card) -> dict[str, int]:
        """Normal balances: subsidy, purse, and the merchant's account."""
        s, now = self.session, shanghai(12)
        merchant = s.get(Account, self.merchant.account_id)
        assert merchant is not None
        return {
            "subsidy": balance_of(s, holder_account(s, card.person_id, ops.SUBSIDY, now=now)),
            "purse": balance_of(s, holder_account(s, card.person_id, ops.PURSE, now=now)),
            "merchant": balance_of(s, merchant),
        }


@pytest.fixture
def world(tenant, session, system_actor, now, make_person, make_card) -> World:
    actor = system_actor
    site = create_site(session, unique("S"), "North campus", ZONE, actor=actor, now=now)
    merchant = setup.create_merchant(session, unique("M"), "Stall 1", site, actor=actor, now=now)
    setup.set_meal_periods(session, site, PERIODS, actor=actor, now=now)

    def make_pos(mode: Mode = Mode.FIXED, **kw) -> Pos:
        device, _pw = add_device(
            session,
            NewDevice(
                device_id=unique("pos-").lower(), kind="pos", module="canteen", site_id=site.id
            ),
            actor=actor,
            now=now,
        )
        prices = FIXED_PRICES if mode is Mode.FIXED else None
        return setup.add_pos(
            session, merchant, device, mode=mode, fixed_prices=prices, actor=actor, now=now, **kw
        )

    def holder(purse: int = 10_000, subsidy: int = 0, identity_class: str = "staff") -> Card:
        person = make_person(identity_class=identity_class)
        card = make_card(person)
        if purse:
            ops.top_up(session, person.id, purse, channel="cash", actor=actor, now=now)
        if subsidy:
            ops.grant_subsidy(session, person.id, subsidy, actor=actor, now=now)
        return card

    return World(session, actor, site, merchant, make_pos(), make_pos(Mode.FREE), make_pos, holder)


def device_of(session: Session, pos: Pos) -> Device:
    device = session.get(Device, pos.device_pk)
    assert device is not None
    return device


@pytest.fixture
def at() -> Callable[..., datetime]:
    """``at(12, 30)``: an instant at that Shanghai wall time on 2026-09-01 (``day=`` for others)."""
    return shanghai


Journal = list[tuple[str, str, int]]


@pytest.fixture
def journal(session: Session) -> Callable[[Entry | None], Journal]:
    """An entry as an accountant reads it: ``[("Dr", account kind, fen), ...]``, debits first
    (``canteen.merchant``, ``holder.purse``, ``card_float``, ``bank_clearing``...)."""

    def _journal(entry: Entry | None) -> Journal:
        assert entry is not None
        rows = session.execute(
            select(Line.amount_fen, Account.kind)
            .join(Account, Account.id == Line.account_id)
            .where(Line.entry_id == entry.id)
        )
        lines = [("Dr" if fen > 0 else "Cr", kind, abs(fen)) for fen, kind in rows]
        return sorted(lines, key=lambda ln: (ln[0] != "Dr", ln[1]))

    return _journal


@pytest.fixture
def keyring(tmp_path: Path) -> Iterator[Keyring]:
    """A software HSM of the test's own, installed as the process keyring canteen uses."""
    ring = Keyring(SoftHsm(tmp_path / "keys.store", KEK, create=True))
    terminalkeys.install_keyring(ring)
    yield ring
    terminalkeys.install_keyring(None)


@pytest.fixture(scope="session")
def registry() -> Registry:
    """The installed modules' hooks, as the bridge calls them."""
    return Registry.load()


def unwrap_pos_key(service: KeyService, wrapped: WrappedKeySet) -> bytes:
    """What the provisioning device does: assemble the transport key from its components,
    unwrap the POS key and check its KCV."""
    ref = wrapped.transport
    info = service.versions(tenant_id=ref.tenant_id, application=ref.application,
                            key_name=ref.name)[-1]  # fmt: skip
    parts = service.export_components(module="canteen", tenant_id=ref.tenant_id,
                                      application=ref.application, key_name=ref.name,
                                      version=ref.version)  # fmt: skip
    key = wrapped.keys[0]
    clear = alg.ecb_decrypt(info.algorithm, combine_components(info.algorithm, parts),
                            key.ciphertext)  # fmt: skip
    assert alg.kcv(key.algorithm, clear) == key.kcv
    return clear


@dataclass
class Terminal:
    """A canteen POS row and the device-side personality that decides offline for it."""

    row: Pos
    device: OfflinePos


@pytest.fixture
def terminals(world, keyring) -> Callable[[], Terminal]:
    """Factory: a free-amount POS provisioned with its MAC key by the key service."""

    def _make() -> Terminal:
        row = world.make_pos(Mode.FREE)
        service = keyring.service(world.session, actor=world.actor, now=shanghai(7))
        wrapped = terminalkeys.provision_pos_key(
            world.session, service, row, actor=world.actor, now=shanghai(7)
        )
        device = OfflinePos(
            device_id=row.device_id, device_key=unwrap_pos_key(service, wrapped), zone=ZONE,
            periods=PERIODS, mode=Mode.FREE, fixed_prices={},
            key_algorithm=wrapped.keys[0].algorithm, key_version=wrapped.keys[0].version,
        )  # fmt: skip
        return Terminal(row, device)

    return _make


def batch_payload(t: Terminal, records: list[dict]) -> bytes:
    """The ``up/records`` payload a POS publishes."""
    return json.dumps({"v": 1, "epoch": t.device.epoch, "records": records}).encode()


@pytest.fixture
def upload(world, registry):
    """``upload(terminal, records)``: what the bridge does with an ``up/records`` batch: store
    the records, then hand the new ones to the enabled modules' ``onecard_records_stored`` in a
    savepoint (a module failure keeps the records). Returns the platform's ingest result."""

    def _upload(t: Terminal, records: list[dict], now: datetime | None = None):
        s, when = world.session, now or shanghai(14)
        device = resolve(s, t.row.device_id)
        done = ingest.ingest(s, device, decode_records(batch_payload(t, records)), now=when)
        try:
            with s.begin_nested():
                registry.hooks_for(frozenset({"canteen"})).onecard_records_stored(
                    device=device, records=done.new, session=s, now=when
                )
        except OneCardError as err:  # the bridge logs and counts it; the records stay
            world.failures.append(err)
        return done

    return _upload
