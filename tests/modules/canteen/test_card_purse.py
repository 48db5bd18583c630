"""Sales paid from the CPU card's own purse: the POS's PSAM debits the card offline and the
uploaded record carries the clearing record; the platform's clearing verifier checks the TAC in
the key service and posts Dr card float / Cr merchant, and canteen records the sale so the
day's statement counts it. Real cards, a real PSAM and the software HSM (the card test kit)."""

from dataclasses import replace
from datetime import date

import pytest
from sqlalchemy import func, select

from onecard.modules.canteen import cases, recordflow
from onecard.modules.canteen.models import Sale
from onecard.modules.canteen.rules import HolderRule
from onecard.modules.canteen.settlement import PosReport, settle_day
from onecard.platform.cards.keymodels import ClearingRecordRow
from onecard.platform.cards.loads import personalisation_package
from onecard.platform.ledger.accounts import balance_of, tenant_account
from onecard.platform.ledger.models import Entry
from onecard.testing.cardkit import (
    buy,
    card_from_package,
    psam_for,
    tampered,
    transport_key,
    unwrapper,
)

RULE = HolderRule()


@pytest.fixture
def cpu(world, keyring, tenant, make_person, make_card, now):
    """A personalised CPU card with 50.00 on its purse, its platform card row, and a PSAM."""
    service = keyring.service(world.session, actor=world.actor, now=now)
    row = make_card(make_person(), kind="cpu")
    pkg = personalisation_package(world.session, service, row, actor=world.actor, now=now)
    unwrap = unwrapper(*transport_key(service, tenant.id))
    card = card_from_package(pkg.to_json(), unwrap)
    card._image = replace(card.image, purse=replace(card.image.purse, balance=5_000))
    return row, card, psam_for(service, tenant.id, unwrap)


def pay_with(card, psam, *, forge: bool = False):
    """The POS's purchase: the PSAM debits the card and returns the 80-byte clearing record."""
    return lambda fen: (
        tampered(buy(card, psam, fen)) if forge else buy(card, psam, fen)
    ).to_bytes()


def sales(world) -> list[Sale]:
    return list(world.session.scalars(select(Sale).order_by(Sale.id)))


def entries(world) -> int:
    return world.session.scalar(select(func.count()).select_from(Entry)) or 0


def test_a_card_purse_sale_is_cleared_posted_and_recorded_as_paid_from_the_card(
    world, at, terminals, upload, cpu, journal
):
    row, card, psam = cpu
    t = terminals()
    _v, rec, _s = t.device.sell_from_card(
        row.card_no, at(12), RULE, pay=pay_with(card, psam), list_fen=1200
    )

    upload(t, [rec])

    [sale] = sales(world)
    cleared = world.session.get(ClearingRecordRow, sale.clearing_record_id)
    assert cleared is not None
    assert (sale.paid_from, sale.amount_fen, sale.card_id, sale.flags) == (
        "card_purse", 1200, row.id, [],
    )  # fmt: skip
    assert (sale.subsidy_fen, sale.purse_fen, sale.receivable_fen) == (0, 0, 0)
    assert (cleared.entry_id, cleared.counter, cleared.classification) == (sale.entry_id, 0, "ok")
    entry = world.session.get(Entry, sale.entry_id)
    assert journal(entry) == [("Dr", "card_float", 1200), ("Cr", "canteen.merchant", 1200)]
    assert world.balances(row)["merchant"] == 1200
    assert card.image.purse.balance == 3_800


def test_the_same_purchase_is_posted_once_however_often_it_arrives(
    world, at, terminals, upload, cpu, keyring, now
):
    row, card, psam = cpu
    t = terminals()
    _v, rec, _s = t.device.sell_from_card(row.card_no, at(12), RULE, pay=pay_with(card, psam),
                                          list_fen=800)  # fmt: skip
    upload(t, [rec])
    posted = entries(world)

    upload(t, [rec])  # the POS resends the batch
    upload(t, [{**rec, "seq": rec["seq"] + 1}])  # and files the purchase again under a new seq
    recordflow.reprocess(world.session, keyring, actor=world.actor, now=now)

    assert entries(world) == posted
    first, again = sales(world)
    assert (first.entry_id is not None, again.entry_id) == (True, None)
    assert again.flags == ["duplicate_clearing"]
    assert again.clearing_record_id == first.clearing_record_id
    assert world.balances(row)["merchant"] == 800


def test_a_record_whose_tac_fails_is_kept_unposted_and_opens_a_case(
    world, at, terminals, upload, cpu
):
    row, card, psam = cpu
    t = terminals()
    _v, rec, _s = t.device.sell_from_card(
        row.card_no, at(12), RULE, pay=pay_with(card, psam, forge=True), list_fen=700
    )

    upload(t, [rec])

    [sale] = sales(world)
    assert (sale.entry_id, sale.clearing_record_id, sale.flags) == (None, None, ["bad_tac"])
    [case] = cases.open_cases(world.session, row.card_no)
    assert (case.kind, case.sale_ids) == ("bad_tac", [sale.id])
    assert world.balances(row)["merchant"] == 0
    assert balance_of(world.session, tenant_account(world.session, "card_float")) == 0


def test_a_clearing_record_that_does_not_parse_is_kept_flagged(world, at, terminals, upload, cpu):
    row, card, psam = cpu
    t = terminals()
    _v, rec, _s = t.device.sell_from_card(row.card_no, at(12), RULE, pay=pay_with(card, psam),
                                          list_fen=700)  # fmt: skip
    broken = rec["clearing"][:-2] + ("00" if rec["clearing"][-2:] != "00" else "01")

    upload(t, [{**rec, "clearing": broken}])  # checksum no longer matches

    [sale] = sales(world)
    assert (sale.entry_id, sale.flags) == (None, ["bad_clearing"])
    assert cases.open_cases(world.session, row.card_no)[0].kind == "bad_tac"


def test_settlement_counts_card_purse_sales_with_the_others(world, at, terminals, upload, cpu):
    row, card, psam = cpu
    t = terminals()
    for hh, fen in ((12, 1200), (18, 900)):
        _v, rec, _s = t.device.sell_from_card(
            row.card_no, at(hh), RULE, pay=pay_with(card, psam), list_fen=fen
        )
        upload(t, [rec])

    statement = settle_day(
        world.session, world.merchant, date(2026, 9, 1), {t.row.device_id: PosReport(2, 2100)},
        actor=world.actor, now=at(22),
    )  # fmt: skip

    assert statement.status == "balanced", statement.exceptions
    assert (statement.sales_count, statement.net_fen, statement.ledger_fen) == (2, 2100, 2100)
