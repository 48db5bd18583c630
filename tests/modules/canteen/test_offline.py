"""Offline sales uploaded after the fact: recorded, posted, and checked across every POS."""

import pytest
from sqlalchemy import select

from onecard.modules.canteen import offline, setup
from onecard.modules.canteen.models import Sale
from onecard.modules.canteen.rules import Allowance, HolderRule
from onecard.platform.actors import Actor
from onecard.platform.approvals import services as approvals
from onecard.platform.cards import blacklist
from onecard.platform.errors import InsufficientFunds
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import balance_of, tenant_account
from onecard.platform.tenants.models import Tenant

RULE = HolderRule()


def allow_offline(world, at, amount_fen=1500, count=2):
    setup.set_rule(
        world.session,
        "staff",
        RULE,
        offline=Allowance(amount_fen, count),
        actor=world.actor,
        now=at(8),
    )
    return Allowance(amount_fen, count)


def test_each_pos_stays_within_the_allowance_but_two_together_overspend(
    world, at, terminals, upload
):
    allowance = allow_offline(world, at)  # 15.00 and 2 sales per day
    card = world.holder(purse=5000)
    a, b = terminals(), terminals()
    _v, rec_a, _s = a.device.sell(card.card_no, at(12), RULE, allowance, list_fen=1200)
    _v, rec_b, _s = b.device.sell(card.card_no, at(12, 20), RULE, allowance, list_fen=1200)

    first = upload(a, [rec_a])
    second = upload(b, [rec_b])

    assert (first.recorded, first.case_ids, first.frozen_cards) == (1, (), ())
    assert second.recorded == 1
    assert second.frozen_cards == (card.card_no,)
    case = offline.open_cases(world.session, card.card_no)[0]
    assert (case.kind, case.over_fen, case.detail["reason"]) == (
        "offline_overspend",
        900,
        "offline_amount_exceeded",
    )
    assert card.status == "frozen"
    assert blacklist.history(world.session, card.id)[-1].reason == "canteen_overspend"
    assert world.balances(card) == {"subsidy": 0, "purse": 2600, "merchant": 2400}


def test_a_repeated_upload_records_nothing_twice(world, at, terminals, upload):
    allowance = allow_offline(world, at)
    card = world.holder()
    a = terminals()
    _v, rec, _s = a.device.sell(card.card_no, at(12), RULE, allowance, list_fen=800)

    upload(a, [rec])
    again = upload(a, [rec])

    assert (again.recorded, again.duplicates) == (0, 1)
    assert world.balances(card)["merchant"] == 800


def test_what_the_purses_cannot_cover_is_owed_and_collected_after_a_top_up(
    world, at, terminals, upload
):
    allowance = allow_offline(world, at, amount_fen=3000)
    card = world.holder(purse=500, subsidy=200)
    a = terminals()
    _v, rec, _s = a.device.sell(card.card_no, at(12), RULE, allowance, list_fen=1200)

    report = upload(a, [rec])

    receivables = tenant_account(world.session, "receivables")
    assert balance_of(world.session, receivables) == 500  # 1200 - 200 subsidy - 500 purse
    assert world.balances(card) == {"subsidy": 0, "purse": 0, "merchant": 1200}
    case = offline.open_cases(world.session, card.card_no)[0]
    assert report.frozen_cards == (card.card_no,)
    assert case.receivable_fen == 500

    tenant = world.session.get(Tenant, world.site.tenant_id)
    cashier = Actor(type="operator", id="op1", operator_id=1, permissions=frozenset({"*"}))
    with pytest.raises(InsufficientFunds), world.session.begin_nested():
        offline.settle_case(world.session, tenant, case, actor=cashier, now=at(15))
    ops.top_up(world.session, card.person_id, 1000, channel="cash", actor=cashier, now=at(15))
    settled = offline.settle_case(world.session, tenant, case, actor=cashier, now=at(15, 5))

    assert balance_of(world.session, receivables) == 0
    assert world.balances(card)["purse"] == 500
    assert settled.unfreeze is not None
    assert settled.unfreeze.pending
    assert card.status == "frozen"  # a blacklist removal needs a second operator
    checker = Actor(type="operator", id="op2", operator_id=2, permissions=frozenset({"*"}))
    approvals.decide(world.session, settled.unfreeze.approval, True, actor=checker, now=at(15, 10))
    assert card.status == "active"


def test_a_record_whose_mac_fails_is_kept_but_not_posted(world, at, terminals, upload):
    allowance = allow_offline(world, at)
    card = world.holder()
    a = terminals()
    _v, rec, _s = a.device.sell(card.card_no, at(12), RULE, allowance, list_fen=800)

    report = upload(a, [{**rec, "amount_fen": 80}])

    sale = world.session.scalar(
        select(Sale).where(Sale.device_seq == rec["seq"], Sale.pos_id == a.row.id)
    )
    assert sale is not None
    assert sale.entry_id is None
    assert "bad_mac" in sale.flags
    assert report.case_ids
    assert world.balances(card)["merchant"] == 0
