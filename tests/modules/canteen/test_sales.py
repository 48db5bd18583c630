"""Online sales: worked examples an accountant can follow (amounts in fen)."""

import pytest
from sqlalchemy import select

from onecard.modules.canteen import context, services, setup
from onecard.modules.canteen.models import Sale
from onecard.modules.canteen.rules import Allowance, CanteenReason, HolderRule, Mode
from onecard.modules.canteen.services import SaleRequest
from onecard.platform.audit.models import AuditEvent
from onecard.platform.cards import lifecycle
from onecard.platform.errors import Conflict
from onecard.platform.ledger.models import Entry


def sell(world, pos, card, when, n=[0], **kw):  # noqa: B006 - a counter for request ids
    n[0] += 1
    request = SaleRequest(request_id=f"r{n[0]}", **kw)
    return services.sell(world.session, pos, card, request, actor=world.actor, now=when)


def test_lunch_draws_the_subsidy_purse_before_the_cash_purse(world, at):
    card = world.holder(purse=10_000, subsidy=300)

    result = sell(world, world.fixed, card, at(12))

    assert result.allow
    assert (result.amount_fen, result.subsidy_fen, result.purse_fen) == (1200, 300, 900)
    assert world.balances(card) == {"subsidy": 0, "purse": 9100, "merchant": 1200}


def test_fixed_amount_pos_allows_one_swipe_per_meal_period(world, at):
    card = world.holder()

    first = sell(world, world.fixed, card, at(11, 30))
    again = sell(world, world.fixed, card, at(12, 45))
    dinner = sell(world, world.fixed, card, at(18))

    assert first.allow
    assert dinner.allow
    assert (again.allow, again.reason, again.code) == (
        False,
        CanteenReason.MEAL_ALREADY_TAKEN,
        "LIMIT_REACHED",
    )
    assert world.balances(card)["purse"] == 10_000 - 1200 - 1000


def test_no_sale_outside_the_sites_meal_periods(world, at):
    card = world.holder()

    result = sell(world, world.fixed, card, at(15))

    assert (result.allow, result.code) == (False, "OUTSIDE_SCHEDULE")


def test_per_meal_limit_of_the_identity_class(world, at):
    setup.set_rule(
        world.session, "student", HolderRule(per_meal_limit_fen=1500), actor=world.actor, now=at(8)
    )
    card = world.holder(identity_class="student")

    first = sell(world, world.free, card, at(12), list_fen=800)
    second = sell(world, world.free, card, at(12, 10), list_fen=800)

    assert first.allow
    assert second.reason is CanteenReason.PER_MEAL_LIMIT


def test_per_day_limit_counts_every_meal_of_the_local_day(world, at):
    setup.set_rule(
        world.session, "student", HolderRule(per_day_limit_fen=2000), actor=world.actor, now=at(8)
    )
    card = world.holder(identity_class="student")

    lunch = sell(world, world.free, card, at(12), list_fen=1500)
    dinner = sell(world, world.free, card, at(18), list_fen=600)
    next_day = sell(world, world.free, card, at(7, day=2), list_fen=600)

    assert lunch.allow
    assert next_day.allow
    assert dinner.reason is CanteenReason.PER_DAY_LIMIT


def test_student_pays_ninety_percent_of_the_list_price(world, at):
    setup.set_rule(world.session, "student", HolderRule(rate_bp=9000), actor=world.actor, now=at(8))
    card = world.holder(identity_class="student")

    result = sell(world, world.fixed, card, at(12))

    assert (result.amount_fen, result.discount_fen) == (1080, 120)
    assert world.balances(card) == {"subsidy": 0, "purse": 8920, "merchant": 1080}


def test_pin_is_required_above_the_threshold(world, at):
    setup.set_rule(
        world.session, "staff", HolderRule(pin_threshold_fen=2000), actor=world.actor, now=at(8)
    )
    card = world.holder()

    at_threshold = sell(world, world.free, card, at(12), list_fen=2000)
    without_pin = sell(world, world.free, card, at(18), list_fen=2500)
    with_pin = sell(world, world.free, card, at(18, 5), list_fen=2500, pin_verified=True)

    assert at_threshold.allow
    assert with_pin.allow
    assert (without_pin.reason, without_pin.code) == (CanteenReason.PIN_REQUIRED, "NOT_PERMITTED")


def test_menu_mode_prices_the_dishes(world, at):
    pos = world.make_pos(Mode.MENU)
    setup.add_menu_item(
        world.session, world.merchant, "rice", "Rice", 100, actor=world.actor, now=at(8)
    )
    setup.add_menu_item(
        world.session, world.merchant, "pork", "红烧肉", 1500, actor=world.actor, now=at(8)
    )
    card = world.holder()

    result = sell(world, pos, card, at(12), items=(("rice", 2), ("pork", 1)))
    unknown = sell(world, pos, card, at(12, 5), items=(("caviar", 1),))

    assert result.amount_fen == 1700
    assert unknown.reason is CanteenReason.AMOUNT_INVALID


def test_frozen_card_is_refused(world, at):
    card = world.holder()
    lifecycle.freeze(world.session, card, actor=world.actor, now=at(8))

    result = sell(world, world.fixed, card, at(12))

    assert (result.allow, result.code) == (False, "CARD_FROZEN")


def test_short_purse_is_refused_and_leaves_no_entry(world, at):
    card = world.holder(purse=1000, subsidy=100)
    entries_before = world.session.scalar(select(Entry.id).order_by(Entry.id.desc()).limit(1))

    result = sell(world, world.fixed, card, at(12))

    assert (result.allow, result.code) == (False, "INSUFFICIENT_FUNDS")
    assert (
        world.session.scalar(select(Entry.id).order_by(Entry.id.desc()).limit(1)) == entries_before
    )
    assert world.balances(card) == {"subsidy": 100, "purse": 1000, "merchant": 0}


def test_a_repeated_request_returns_the_first_sale(world, at):
    card = world.holder()
    request = SaleRequest(request_id="same")

    first = services.sell(world.session, world.fixed, card, request, actor=world.actor, now=at(12))
    again = services.sell(world.session, world.fixed, card, request, actor=world.actor, now=at(12))

    assert again.replayed
    assert again.sale_id == first.sale_id
    assert world.balances(card)["purse"] == 8800


def test_cashier_refunds_the_last_sale_back_to_where_it_came_from(world, at):
    card = world.holder(purse=10_000, subsidy=300)
    sale = sell(world, world.fixed, card, at(12))

    refund = services.refund_last_sale(
        world.session, world.fixed, reason="wrong dish", actor=world.actor, now=at(12, 2)
    )

    assert refund.sale_id == sale.sale_id
    assert refund.amount_fen == 1200
    assert world.balances(card) == {"subsidy": 300, "purse": 10_000, "merchant": 0}
    reversal = world.session.get(Entry, refund.entry_id)
    assert reversal is not None
    assert reversal.reverses_id is not None
    audit = world.session.scalar(
        select(AuditEvent).where(AuditEvent.type == "canteen.sale.refunded")
    )
    assert audit is not None
    assert audit.data["reason"] == "wrong dish"
    with pytest.raises(Conflict):
        services.refund_last_sale(
            world.session, world.fixed, reason="again", actor=world.actor, now=at(12, 3)
        )


def test_a_refunded_lunch_no_longer_counts_towards_the_meal(world, at):
    card = world.holder()
    sell(world, world.fixed, card, at(12))
    services.refund_last_sale(
        world.session, world.fixed, reason="x", actor=world.actor, now=at(12, 1)
    )

    again = sell(world, world.fixed, card, at(12, 5))

    assert again.allow
    assert len(world.session.scalars(select(Sale).where(Sale.card_id == card.id)).all()) == 2


def test_card_allowance_overrides_the_class_allowance(world, at):
    setup.set_rule(
        world.session,
        "staff",
        HolderRule(),
        offline=Allowance(3000, 3),
        actor=world.actor,
        now=at(8),
    )
    card = world.holder()
    setup.set_card_allowance(world.session, card, Allowance(500, 1), actor=world.actor, now=at(8))

    assert context.offline_allowance(world.session, card) == Allowance(500, 1)


def test_a_rule_changed_in_the_same_transaction_applies_to_the_next_sale(world, at):
    """Set-up rows are read once per transaction (a bridge chunk); a change is never missed."""
    card = world.holder()
    assert sell(world, world.free, card, at(12), list_fen=2000).allow
    setup.set_rule(
        world.session, "staff", HolderRule(per_day_limit_fen=2500), actor=world.actor, now=at(12)
    )

    second = sell(world, world.free, card, at(12, 5), list_fen=1000)

    assert (second.allow, second.code) == (False, "LIMIT_REACHED")
