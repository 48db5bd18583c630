"""A canteen world for the worked examples: a site in Asia/Shanghai with breakfast, lunch and
dinner, one merchant with a fixed-price POS and a free-amount POS, and holders with purses."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.orm import Session

from onecard.modules.canteen import setup
from onecard.modules.canteen.models import Merchant, Pos
from onecard.modules.canteen.offline import OfflineSale, ingest_offline_sales
from onecard.modules.canteen.pos import OfflinePos
from onecard.modules.canteen.rules import MealPeriod, Mode
from onecard.platform.actors import Actor
from onecard.platform.cards.models import Card
from onecard.platform.devices.models import Device
from onecard.platform.devices.services import NewDevice, add_device
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import balance_of, holder_account
from onecard.platform.ledger.models import Account
from onecard.platform.tenants.models import Site
from onecard.platform.tenants.services import create_site
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


@dataclass
class Terminal:
    """A canteen POS row and the device-side personality that decides offline for it."""

    row: Pos
    device: OfflinePos


@pytest.fixture
def terminals(world) -> Callable[[], Terminal]:
    """Factory: a free-amount POS whose device side decides offline with its own MAC key."""

    def _make() -> Terminal:
        row = world.make_pos(Mode.FREE)
        key = row.device_id.encode().ljust(16, b"k")
        device = OfflinePos(
            device_id=row.device_id, device_key=key, zone=ZONE, periods=PERIODS,
            mode=Mode.FREE, fixed_prices={},
        )  # fmt: skip
        return Terminal(row, device)

    return _make


def verify_mac(device_id: str, message: bytes, mac: str) -> bool:
    """The key service's verifier, as the tests' devices derive their keys."""
    key = device_id.encode().ljust(16, b"k")
    return hmac.compare_digest(hmac.new(key, message, hashlib.sha256).hexdigest()[:32], mac)


def as_upload(record: dict) -> OfflineSale:
    """A device record as the bridge would hand it to the canteen."""
    return OfflineSale(
        device_id=record["device_id"], epoch=record["epoch"], seq=record["seq"],
        card_no=record["card_no"], list_fen=record["list_fen"], amount_fen=record["amount_fen"],
        device_time=record["device_time"], mac=record["mac"], period=record["period"],
    )  # fmt: skip


@pytest.fixture
def upload(world):
    """``upload(terminal, records)``: ingest records of one POS (system actor)."""

    def _upload(t: Terminal, records: list[dict], now: datetime | None = None):
        return ingest_offline_sales(
            world.session, t.row, [as_upload(r) for r in records], verify_mac=verify_mac,
            actor=world.actor, now=now or shanghai(14),
        )  # fmt: skip

    return _upload
