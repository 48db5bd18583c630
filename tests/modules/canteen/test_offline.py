"""Offline sales charged to the holder's platform purses: a POS decides alone, MACs the record
with the key the key service provisioned, uploads it on ``up/records``; the platform stores it
and hands it to canteen's ``onecard_records_stored``, which verifies, posts and checks the
offline policy across every POS."""

import pytest
from sqlalchemy import func, select

from onecard.keys.softhsm import SoftHsm
from onecard.modules.canteen import cases, setup, terminalkeys
from onecard.modules.canteen.models import ReconCase, Sale
from onecard.modules.canteen.rules import Allowance, HolderRule
from onecard.platform.actors import Actor
from onecard.platform.approvals import services as approvals
from onecard.platform.cards import blacklist
from onecard.platform.cards.keyring import Keyring
from onecard.platform.devices.models import DeviceRecord
from onecard.platform.errors import InsufficientFunds
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import balance_of, tenant_account
from onecard.platform.ledger.models import Entry
from onecard.platform.tenants.models import Tenant
from onecard.testing.cardkit import KEK

RULE = HolderRule()


def allow_offline(world, at, amount_fen=1500, count=2):
    setup.set_rule(
        world.session, "staff", RULE, offline=Allowance(amount_fen, count), actor=world.actor,
        now=at(8),
    )  # fmt: skip
    return Allowance(amount_fen, count)


def sale_of(world, t, record) -> Sale:
    """The sale recorded from ``record`` of terminal ``t`` (through its device record)."""
    sale = world.session.scalar(
        select(Sale)
        .join(DeviceRecord, DeviceRecord.id == Sale.record_id)
        .where(DeviceRecord.device_pk == t.row.device_pk, DeviceRecord.seq == record["seq"])
    )
    assert sale is not None
    return sale


def count(world, model) -> int:
    return world.session.scalar(select(func.count()).select_from(model)) or 0


def test_an_uploaded_sale_is_recorded_from_its_device_record_and_posted(
    world, at, terminals, upload, journal
):
    allowance = allow_offline(world, at)
    card = world.holder(purse=5000, subsidy=300)
    t = terminals()
    _v, rec, _s = t.device.sell(card.card_no, at(12), RULE, allowance, list_fen=1200)

    done = upload(t, [rec])

    sale = sale_of(world, t, rec)
    assert done.ack.acked_upto == 1
    assert (sale.amount_fen, sale.subsidy_fen, sale.purse_fen, sale.flags) == (1200, 300, 900, [])
    assert (sale.source, sale.paid_from, sale.period, sale.key) == (
        "offline", "accounts", "lunch", f"rec:{sale.record_id}",
    )  # fmt: skip
    entry = world.session.get(Entry, sale.entry_id)
    assert journal(entry) == [
        ("Dr", "holder.purse", 900), ("Dr", "holder.subsidy", 300),
        ("Cr", "canteen.merchant", 1200),
    ]  # fmt: skip
    assert world.balances(card) == {"subsidy": 0, "purse": 4100, "merchant": 1200}
    assert world.failures == []


def test_a_replayed_upload_posts_nothing_twice(world, at, terminals, upload):
    allowance = allow_offline(world, at)
    card = world.holder()
    t = terminals()
    _v, rec, _s = t.device.sell(card.card_no, at(12), RULE, allowance, list_fen=800)
    upload(t, [rec])
    sales, entries = count(world, Sale), count(world, Entry)

    again = upload(t, [rec])

    assert (again.stored, again.duplicates, again.new) == (0, 1, ())
    assert (count(world, Sale), count(world, Entry)) == (sales, entries)
    assert world.balances(card)["merchant"] == 800


def test_each_pos_stays_within_the_allowance_but_two_together_overspend(
    world, at, terminals, upload
):
    allowance = allow_offline(world, at)  # 15.00 and 2 sales per day
    card = world.holder(purse=5000)
    a, b = terminals(), terminals()
    _v, rec_a, _s = a.device.sell(card.card_no, at(12), RULE, allowance, list_fen=1200)
    _v, rec_b, _s = b.device.sell(card.card_no, at(12, 20), RULE, allowance, list_fen=1200)

    upload(a, [rec_a])
    assert (cases.open_cases(world.session, card.card_no), card.status) == ([], "active")
    upload(b, [rec_b])

    case = cases.open_cases(world.session, card.card_no)[0]
    assert (case.kind, case.over_fen, case.detail["reason"]) == (
        "offline_overspend", 900, "offline_amount_exceeded",
    )  # fmt: skip
    assert case.detail["devices"] == sorted([a.row.id, b.row.id])
    assert card.status == "frozen"
    assert blacklist.history(world.session, card.id)[-1].reason == "canteen_overspend"
    assert world.balances(card) == {"subsidy": 0, "purse": 2600, "merchant": 2400}


def test_a_record_whose_mac_fails_is_kept_flagged_and_not_posted(world, at, terminals, upload):
    allowance = allow_offline(world, at)
    card = world.holder()
    t = terminals()
    _v, rec, _s = t.device.sell(card.card_no, at(12), RULE, allowance, list_fen=800)

    upload(t, [{**rec, "amount": 80}])  # altered after the POS MACed it

    sale = sale_of(world, t, rec)
    assert (sale.entry_id, sale.amount_fen, sale.flags) == (None, 80, ["bad_mac"])
    stored = world.session.get(DeviceRecord, sale.record_id)
    assert stored is not None
    assert stored.amount_fen == 80  # the fact as uploaded
    case = world.session.scalar(select(ReconCase).where(ReconCase.card_no == card.card_no))
    assert case is not None
    assert (case.kind, case.sale_ids) == ("bad_mac", [sale.id])
    assert card.status == "active"  # an unauthenticated record cannot condemn the card it names
    assert world.balances(card)["merchant"] == 0


def test_a_record_maced_with_another_pos_key_fails(world, at, terminals, upload):
    allowance = allow_offline(world, at)
    card = world.holder()
    a, b = terminals(), terminals()
    _v, rec, _s = a.device.sell(card.card_no, at(12), RULE, allowance, list_fen=800)

    upload(b, [rec])  # b uploads a record a MACed

    assert "bad_mac" in sale_of(world, b, rec).flags


def test_without_a_pos_key_in_the_key_service_nothing_is_recorded_and_the_records_stay(
    world, at, terminals, upload, keyring, tmp_path
):
    allowance = allow_offline(world, at)
    card, t = world.holder(), terminals()
    _v, rec, _s = t.device.sell(card.card_no, at(12), RULE, allowance, list_fen=800)
    terminalkeys.install_keyring(Keyring(SoftHsm(tmp_path / "empty.store", KEK, create=True)))

    done = upload(t, [rec])

    assert done.stored == 1
    assert [e.details["reason"] for e in world.failures] == ["key_unavailable"]
    assert count(world, Sale) == 0


def test_what_the_purses_cannot_cover_is_owed_and_collected_after_a_top_up(
    world, at, terminals, upload
):
    allowance = allow_offline(world, at, amount_fen=3000)
    card = world.holder(purse=500, subsidy=200)
    t = terminals()
    _v, rec, _s = t.device.sell(card.card_no, at(12), RULE, allowance, list_fen=1200)

    upload(t, [rec])

    receivables = tenant_account(world.session, "receivables")
    assert balance_of(world.session, receivables) == 500  # 1200 - 200 subsidy - 500 purse
    assert world.balances(card) == {"subsidy": 0, "purse": 0, "merchant": 1200}
    case = cases.open_cases(world.session, card.card_no)[0]
    assert card.status == "frozen"
    assert case.receivable_fen == 500

    tenant = world.session.get(Tenant, world.site.tenant_id)
    cashier = Actor(type="operator", id="op1", operator_id=1, permissions=frozenset({"*"}))
    with pytest.raises(InsufficientFunds), world.session.begin_nested():
        cases.settle_case(world.session, tenant, case, actor=cashier, now=at(15))
    ops.top_up(world.session, card.person_id, 1000, channel="cash", actor=cashier, now=at(15))
    settled = cases.settle_case(world.session, tenant, case, actor=cashier, now=at(15, 5))

    assert balance_of(world.session, receivables) == 0
    assert world.balances(card)["purse"] == 500
    assert settled.unfreeze is not None
    assert settled.unfreeze.pending
    assert card.status == "frozen"  # a blacklist removal needs a second operator
    checker = Actor(type="operator", id="op2", operator_id=2, permissions=frozenset({"*"}))
    approvals.decide(world.session, settled.unfreeze.approval, True, actor=checker, now=at(15, 10))
    assert card.status == "active"
