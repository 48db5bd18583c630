"""Daily merchant settlement: POS totals, uploaded records and ledger postings must agree."""

from datetime import date

from onecard.modules.canteen import services, setup
from onecard.modules.canteen.rules import Allowance, HolderRule
from onecard.modules.canteen.services import SaleRequest
from onecard.modules.canteen.settlement import PosReport, settle_day

DAY = date(2026, 9, 1)


def a_day_of_sales(world, at, terminals, upload):
    """Online: lunch 1200 and dinner 1000 on the fixed POS, 800 on the free POS then refunded.
    Offline: 1500 on a third POS uploaded after lunch."""
    setup.set_rule(
        world.session,
        "staff",
        HolderRule(),
        offline=Allowance(3000, 3),
        actor=world.actor,
        now=at(8),
    )
    card, other = world.holder(), world.holder()
    s = world.session
    services.sell(s, world.fixed, card, SaleRequest("l1"), actor=world.actor, now=at(12))
    services.sell(s, world.fixed, card, SaleRequest("d1"), actor=world.actor, now=at(18))
    services.sell(
        s, world.free, other, SaleRequest("f1", list_fen=800), actor=world.actor, now=at(12)
    )
    services.refund_last_sale(s, world.free, reason="typo", actor=world.actor, now=at(12, 1))
    t = terminals()
    _v, rec, _s = t.device.sell(
        other.card_no, at(12, 30), HolderRule(), Allowance(3000, 3), list_fen=1500
    )
    upload(t, [rec])
    return t


def test_a_day_whose_three_sources_agree_is_balanced(world, at, terminals, upload):
    t = a_day_of_sales(world, at, terminals, upload)
    reports = {
        world.fixed.device_id: PosReport(2, 2200),
        world.free.device_id: PosReport(0, 0),
        t.row.device_id: PosReport(1, 1500),
    }

    statement = settle_day(
        world.session, world.merchant, DAY, reports, actor=world.actor, now=at(22)
    )

    assert statement.status == "balanced", statement.exceptions
    assert (statement.sales_count, statement.gross_fen, statement.refunds_fen) == (3, 4500, 800)
    assert (statement.net_fen, statement.ledger_fen) == (3700, 3700)


def test_disagreements_are_listed_as_exceptions(world, at, terminals, upload):
    t = a_day_of_sales(world, at, terminals, upload)
    card = world.holder()
    _v, rec, _s = t.device.sell(
        card.card_no, at(13), HolderRule(), Allowance(3000, 3), list_fen=900
    )
    upload(t, [{**rec, "amount": 9}])  # altered on the way: the MAC fails, nothing posted
    reports = {world.fixed.device_id: PosReport(2, 2100), t.row.device_id: PosReport(2, 2400)}

    statement = settle_day(
        world.session, world.merchant, DAY, reports, actor=world.actor, now=at(22)
    )

    kinds = sorted(e["kind"] for e in statement.exceptions)
    assert statement.status == "exceptions"
    assert kinds == [
        "pos_report_missing",
        "pos_total_mismatch",
        "pos_total_mismatch",
        "record_without_posting",
    ]


def test_settling_twice_returns_the_first_statement(world, at):
    first = settle_day(world.session, world.merchant, DAY, {}, actor=world.actor, now=at(22))
    again = settle_day(world.session, world.merchant, DAY, {}, actor=world.actor, now=at(23))

    assert again.id == first.id
