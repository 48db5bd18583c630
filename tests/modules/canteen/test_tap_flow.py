"""The online tap through the platform's own tap flow (``platform.devices.taps.decide``)."""

import json
from types import SimpleNamespace

from sqlalchemy import select

from onecard.modules.canteen import checks, tapflow
from onecard.modules.canteen.models import Sale
from onecard.platform.devices import services as devices
from onecard.platform.devices import taps
from onecard.platform.devices.models import DeviceTap
from onecard.platform.devices.wire import TapRequest
from onecard.platform.registry import Registry


def tap(card, req_id, amount_fen=None):
    body = {"v": 1, "req_id": req_id, "credential": {"kind": "card_no", "value": card.card_no}}
    return TapRequest.model_validate_json(
        json.dumps({**body, "amount": amount_fen, "device_time": 1_788_220_800_000})
    )


def canteen_hooks(session):
    """What the platform's relay does, with the session the canteen's decision reads from."""
    return SimpleNamespace(
        onecard_authorize_tap=lambda tap: [tapflow.authorize_tap(session, tap)],
        onecard_tap_recorded=lambda **_kw: None,
    )


def test_a_lunch_tap_is_decided_by_canteen_and_posted_by_the_platform_subsidy_first(world, at):
    card = world.holder(purse=10_000, subsidy=300)
    ref = devices.resolve(world.session, world.fixed.device_id)

    outcome = taps.decide(
        world.session, ref, tap(card, "t1"), canteen_hooks(world.session), now=at(12)
    )
    sale = tapflow.record_tap_sale(world.session, outcome.request, outcome.entry_ids[0], now=at(12))

    assert (outcome.allow, outcome.reason, outcome.balance_fen) == (True, "OK", 9100)
    assert world.balances(card) == {"subsidy": 0, "purse": 9100, "merchant": 1200}
    assert (sale.subsidy_fen, sale.purse_fen, sale.period) == (300, 900, "lunch")


def test_a_second_lunch_tap_is_denied_with_the_canteen_reason(world, at):
    card = world.holder()
    ref = devices.resolve(world.session, world.fixed.device_id)
    hooks = canteen_hooks(world.session)
    first = taps.decide(world.session, ref, tap(card, "t1"), hooks, now=at(12))
    tapflow.record_tap_sale(world.session, first.request, first.entry_ids[0], now=at(12))

    second = taps.decide(world.session, ref, tap(card, "t2"), hooks, now=at(12, 30))

    assert (second.allow, second.reason) == (False, "LIMIT_REACHED")
    assert world.session.scalars(select(Sale).where(Sale.card_id == card.id)).all() != []


def test_the_registered_hooks_sell_in_the_tap_transaction_and_limit_the_second(world, at):
    registry = Registry.load()
    card = world.holder(purse=10_000, subsidy=300)
    ref = devices.resolve(world.session, world.fixed.device_id)
    hooks = registry.hooks_for(frozenset({"canteen"}))

    first = taps.decide(world.session, ref, tap(card, "t1"), hooks, now=at(12))
    second = taps.decide(world.session, ref, tap(card, "t2"), hooks, now=at(12, 30))

    assert (first.allow, first.reason, first.balance_fen) == (True, "OK", 9100)
    sales = world.session.scalars(select(Sale).where(Sale.card_id == card.id)).all()
    assert [(x.subsidy_fen, x.purse_fen) for x in sales] == [(300, 900)]
    assert (second.allow, second.reason) == (False, "LIMIT_REACHED")
    assert world.balances(card) == {"subsidy": 0, "purse": 9100, "merchant": 1200}


def test_the_module_registers_its_permissions_and_the_pos_device_kind():
    registry = Registry.load()

    assert {"canteen.sell", "canteen.refund", "canteen.settle"} <= set(registry.permissions)
    kinds = [k for batch in registry.pm.hook.onecard_device_kinds() for k in batch]
    assert [(k.kind, k.module) for k in kinds] == [("pos", "canteen")]


def test_the_books_check_matches_each_allowed_tap_with_one_sale_and_one_entry(world, at):
    registry = Registry.load()
    card = world.holder()
    ref = devices.resolve(world.session, world.fixed.device_id)
    hooks = registry.hooks_for(frozenset({"canteen"}))
    sold = taps.decide(world.session, ref, tap(card, "t1"), hooks, now=at(12))
    denied = taps.decide(world.session, ref, tap(card, "t2"), hooks, now=at(12, 30))
    rows = world.session.scalars(select(DeviceTap).where(DeviceTap.device_pk == ref.pk)).all()
    pairs = [(ref.device_id, row) for row in rows]

    assert (sold.allow, denied.allow) == (True, False)
    assert checks.tap_sale_problems(world.session, pairs) == []
    # Without its tap, the sale and its entry are left over.
    left = checks.tap_sale_problems(world.session, [p for p in pairs if p[1].req_id != "t1"])
    assert left == [
        f"online sale tap:{ref.device_id}:t1 has no tap",
        f"entry canteen:tap:{ref.device_id}:t1 has no tap",
    ]
