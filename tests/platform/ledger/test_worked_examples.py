"""The card centre's money movements as worked examples an accountant can follow.

Every example states the entry it expects as debit/credit lines (accounts named by kind) and the
balances people see afterwards. Amounts are fen: 10000 fen = 100.00 yuan.
"""

import pytest

from onecard.platform.errors import Conflict, DuplicateRequest, InsufficientFunds, ValidationFailed
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import tenant_account
from onecard.platform.ledger.models import Entry, Line
from onecard.platform.ledger.posting import reverse
from onecard.platform.ledger.reconcile import verify

PURSE, SUBSIDY, DEPOSIT = ops.PURSE, ops.SUBSIDY, ops.DEPOSIT


@pytest.fixture
def holder(make_person):
    return make_person(name="Wang Fang")


@pytest.fixture
def cash_desk(session, tenant):
    return tenant_account(session, "cash_desk")


@pytest.fixture
def top_up_cash(session, system_actor, now):
    def _top_up(person, fen):
        return ops.top_up(session, person.id, fen, channel="cash", actor=system_actor, now=now)

    return _top_up


@pytest.fixture
def meal(session, merchant, system_actor, now):
    """Factory: sell a canteen meal to a person (the canteen module's charge)."""

    def _meal(person, fen, key):
        return ops.charge(
            session,
            person.id,
            merchant,
            fen,
            actor=system_actor,
            now=now,
            code="canteen.meal",
            idempotency_key=key,
        )

    return _meal


# --- top-ups -------------------------------------------------------------------------------


def test_cash_top_up_debits_the_cash_desk_and_credits_the_purse(
    holder, top_up_cash, journal, balance, accounts_of, cash_desk
):
    entry = top_up_cash(holder, 10000)

    assert entry.code == "topup.cash"
    assert journal(entry) == [("Dr", "cash_desk", 10000), ("Cr", "holder.purse", 10000)]
    assert balance(accounts_of(holder)[PURSE]) == 10000
    assert balance(cash_desk) == 10000


def test_bank_top_up_is_keyed_by_the_bank_reference(
    session, holder, journal, balance, accounts_of, system_actor, now
):
    entry = ops.top_up(
        session,
        holder.id,
        5000,
        channel="bank",
        bank_reference="ICBC-0001",
        actor=system_actor,
        now=now,
    )

    assert entry.idempotency_key == "bank:ICBC-0001"
    assert journal(entry) == [("Dr", "bank_clearing", 5000), ("Cr", "holder.purse", 5000)]
    assert balance(accounts_of(holder)[PURSE]) == 5000


def test_bank_top_up_replayed_by_the_bank_credits_the_purse_once(
    session, holder, balance, accounts_of, count_rows, system_actor, now
):
    first = ops.top_up(
        session,
        holder.id,
        5000,
        channel="bank",
        bank_reference="ICBC-0002",
        actor=system_actor,
        now=now,
    )
    again = ops.top_up(
        session,
        holder.id,
        5000,
        channel="bank",
        bank_reference="ICBC-0002",
        actor=system_actor,
        now=now,
    )

    assert again.id == first.id
    assert balance(accounts_of(holder)[PURSE]) == 5000
    assert count_rows(Entry) == 1


def test_bank_reference_reused_for_another_amount_is_refused(session, holder, system_actor, now):
    ops.top_up(
        session,
        holder.id,
        5000,
        channel="bank",
        bank_reference="ICBC-0003",
        actor=system_actor,
        now=now,
    )

    with pytest.raises(DuplicateRequest):
        ops.top_up(
            session,
            holder.id,
            9000,
            channel="bank",
            bank_reference="ICBC-0003",
            actor=system_actor,
            now=now,
        )


def test_bank_top_up_without_a_reference_is_refused(session, holder, system_actor, now):
    with pytest.raises(ValidationFailed):
        ops.top_up(session, holder.id, 5000, channel="bank", actor=system_actor, now=now)


# --- canteen meals -------------------------------------------------------------------------


def test_canteen_meal_draws_the_subsidy_first_then_the_purse(
    session, holder, top_up_cash, meal, journal, balance, accounts_of, merchant, system_actor, now
):
    top_up_cash(holder, 5000)
    ops.grant_subsidy(session, holder.id, 300, actor=system_actor, now=now)

    entry = meal(holder, 1200, "pos-7:1")

    assert journal(entry) == [
        ("Dr", "holder.purse", 900),
        ("Dr", "holder.subsidy", 300),
        ("Cr", "merchant", 1200),
    ]
    accounts = accounts_of(holder)
    assert balance(accounts[SUBSIDY]) == 0
    assert balance(accounts[PURSE]) == 4100
    assert balance(merchant) == 1200


def test_meal_covered_by_the_subsidy_leaves_the_purse_untouched(
    session, holder, top_up_cash, meal, journal, balance, accounts_of, system_actor, now
):
    top_up_cash(holder, 5000)
    ops.grant_subsidy(session, holder.id, 1500, actor=system_actor, now=now)

    entry = meal(holder, 1200, "pos-7:2")

    assert journal(entry) == [("Dr", "holder.subsidy", 1200), ("Cr", "merchant", 1200)]
    assert balance(accounts_of(holder)[SUBSIDY]) == 300
    assert balance(accounts_of(holder)[PURSE]) == 5000


def test_meal_denied_when_purse_and_subsidy_fall_short(
    session,
    holder,
    top_up_cash,
    meal,
    balance,
    accounts_of,
    count_rows,
    merchant,
    system_actor,
    now,
):
    top_up_cash(holder, 800)
    ops.grant_subsidy(session, holder.id, 300, actor=system_actor, now=now)
    entries_before = count_rows(Entry)

    with pytest.raises(InsufficientFunds):
        meal(holder, 1200, "pos-7:3")

    assert count_rows(Entry) == entries_before
    assert balance(accounts_of(holder)[PURSE]) == 800
    assert balance(accounts_of(holder)[SUBSIDY]) == 300
    assert balance(merchant) == 0


# --- deposits ------------------------------------------------------------------------------


def test_deposit_taken_in_cash_is_owed_to_the_holder(
    session, holder, journal, balance, accounts_of, cash_desk, system_actor, now
):
    entry = ops.take_deposit(session, holder.id, 2000, actor=system_actor, now=now)

    assert journal(entry) == [("Dr", "cash_desk", 2000), ("Cr", "holder.deposit", 2000)]
    assert balance(accounts_of(holder)[DEPOSIT]) == 2000
    assert balance(cash_desk) == 2000


def test_deposit_released_is_paid_back_in_cash(
    session, holder, journal, balance, accounts_of, cash_desk, system_actor, now
):
    ops.take_deposit(session, holder.id, 2000, actor=system_actor, now=now)

    entry = ops.release_deposit(session, holder.id, 2000, actor=system_actor, now=now)

    assert journal(entry) == [("Dr", "holder.deposit", 2000), ("Cr", "cash_desk", 2000)]
    assert balance(accounts_of(holder)[DEPOSIT]) == 0
    assert balance(cash_desk) == 0


def test_releasing_more_deposit_than_was_taken_is_refused(session, holder, system_actor, now):
    ops.take_deposit(session, holder.id, 2000, actor=system_actor, now=now)

    with pytest.raises(InsufficientFunds):
        ops.release_deposit(session, holder.id, 2500, actor=system_actor, now=now)


# --- refunds and reversals -----------------------------------------------------------------


def test_meal_refunded_by_reversal_restores_subsidy_and_purse(
    session, holder, top_up_cash, meal, journal, balance, accounts_of, merchant, system_actor, now
):
    top_up_cash(holder, 5000)
    ops.grant_subsidy(session, holder.id, 300, actor=system_actor, now=now)
    sold = meal(holder, 1200, "pos-7:4")

    refund = reverse(session, sold, idempotency_key="refund:pos-7:4", actor=system_actor, now=now)

    assert refund.reverses_id == sold.id
    assert refund.code == "canteen.meal.reversal"
    assert journal(refund) == [
        ("Dr", "merchant", 1200),
        ("Cr", "holder.purse", 900),
        ("Cr", "holder.subsidy", 300),
    ]
    assert balance(accounts_of(holder)[PURSE]) == 5000
    assert balance(accounts_of(holder)[SUBSIDY]) == 300
    assert balance(merchant) == 0


def test_an_entry_is_reversed_at_most_once(session, holder, top_up_cash, system_actor, now):
    entry = top_up_cash(holder, 5000)
    reverse(session, entry, idempotency_key="rev-1", actor=system_actor, now=now)

    with pytest.raises(Conflict):
        reverse(session, entry, idempotency_key="rev-2", actor=system_actor, now=now)


def test_a_reversal_cannot_itself_be_reversed(session, holder, top_up_cash, system_actor, now):
    reversal = reverse(
        session, top_up_cash(holder, 5000), idempotency_key="rev-3", actor=system_actor, now=now
    )

    with pytest.raises(Conflict):
        reverse(session, reversal, idempotency_key="rev-4", actor=system_actor, now=now)


def test_reversal_replayed_with_its_key_returns_the_first_reversal(
    session, holder, top_up_cash, balance, accounts_of, system_actor, now
):
    entry = top_up_cash(holder, 5000)
    first = reverse(session, entry, idempotency_key="rev-5", actor=system_actor, now=now)

    again = reverse(session, entry, idempotency_key="rev-5", actor=system_actor, now=now)

    assert again.id == first.id
    assert balance(accounts_of(holder)[PURSE]) == 0


def test_cash_refund_pays_purse_money_out_of_the_cash_desk(
    session, holder, top_up_cash, journal, balance, accounts_of, cash_desk, system_actor, now
):
    top_up_cash(holder, 5000)

    entry = ops.refund(session, holder.id, 2000, actor=system_actor, now=now)

    assert journal(entry) == [("Dr", "holder.purse", 2000), ("Cr", "cash_desk", 2000)]
    assert balance(accounts_of(holder)[PURSE]) == 3000
    assert balance(cash_desk) == 3000


# --- transfers, subsidies, adjustments -----------------------------------------------------


def test_transfer_moves_value_between_two_purses(
    session, make_person, top_up_cash, journal, balance, accounts_of, system_actor, now
):
    parent, child = make_person(name="Parent"), make_person(name="Child")
    top_up_cash(parent, 5000)

    entry = ops.transfer(
        session,
        accounts_of(parent)[PURSE],
        accounts_of(child)[PURSE],
        1500,
        actor=system_actor,
        now=now,
    )

    assert journal(entry) == [("Dr", "holder.purse", 1500), ("Cr", "holder.purse", 1500)]
    assert balance(accounts_of(parent)[PURSE]) == 3500
    assert balance(accounts_of(child)[PURSE]) == 1500


def test_transfer_of_more_than_the_purse_holds_is_refused(
    session, make_person, top_up_cash, accounts_of, system_actor, now
):
    parent, child = make_person(), make_person()
    top_up_cash(parent, 1000)

    with pytest.raises(InsufficientFunds):
        ops.transfer(
            session,
            accounts_of(parent)[PURSE],
            accounts_of(child)[PURSE],
            1001,
            actor=system_actor,
            now=now,
        )


def test_subsidy_grant_is_an_expense_owed_to_the_holder(
    session, holder, journal, balance, accounts_of, system_actor, now
):
    entry = ops.grant_subsidy(session, holder.id, 300, actor=system_actor, now=now)

    assert journal(entry) == [("Dr", "subsidy_expense", 300), ("Cr", "holder.subsidy", 300)]
    assert balance(accounts_of(holder)[SUBSIDY]) == 300
    assert balance(tenant_account(session, "subsidy_expense")) == 300


def test_subsidy_batch_rerun_adds_nothing(
    session, make_person, balance, accounts_of, count_rows, system_actor, now
):
    people = [make_person() for _ in range(3)]
    rows = [ops.SubsidyLine(p.id, 300) for p in people]
    first = ops.grant_subsidy_batch(session, "2026-09", rows, actor=system_actor, now=now)
    entries = count_rows(Entry)

    rerun = ops.grant_subsidy_batch(session, "2026-09", rows, actor=system_actor, now=now)

    assert [e.id for e in rerun] == [e.id for e in first]
    assert count_rows(Entry) == entries
    assert [balance(accounts_of(p)[SUBSIDY]) for p in people] == [300, 300, 300]
    assert balance(tenant_account(session, "subsidy_expense")) == 900


def test_positive_adjustment_raises_the_purse_against_equity(
    session, holder, journal, balance, accounts_of, system_actor, now
):
    purse = accounts_of(holder)[PURSE]

    entry = ops.adjust(
        session, purse, 500, reason="cashier keyed 45 instead of 50", actor=system_actor, now=now
    )

    assert journal(entry) == [("Dr", "adjustments", 500), ("Cr", "holder.purse", 500)]
    assert balance(purse) == 500


def test_negative_adjustment_lowers_the_purse_against_equity(
    session, holder, top_up_cash, journal, balance, accounts_of, system_actor, now
):
    top_up_cash(holder, 1000)
    purse = accounts_of(holder)[PURSE]

    entry = ops.adjust(session, purse, -300, reason="double top-up", actor=system_actor, now=now)

    assert journal(entry) == [("Dr", "holder.purse", 300), ("Cr", "adjustments", 300)]
    assert balance(purse) == 700


def test_adjustment_without_a_reason_is_refused(session, holder, accounts_of, system_actor, now):
    with pytest.raises(ValidationFailed):
        ops.adjust(
            session, accounts_of(holder)[PURSE], 500, reason="  ", actor=system_actor, now=now
        )


def test_a_day_of_worked_examples_leaves_the_ledger_consistent(
    session, make_person, top_up_cash, meal, accounts_of, count_rows, system_actor, now
):
    alice, bob = make_person(), make_person()
    top_up_cash(alice, 10000)
    ops.grant_subsidy(session, bob.id, 300, actor=system_actor, now=now)
    ops.take_deposit(session, bob.id, 2000, actor=system_actor, now=now)
    sold = meal(alice, 1200, "pos-1:1")
    reverse(session, sold, idempotency_key="refund:pos-1:1", actor=system_actor, now=now)
    ops.transfer(
        session,
        accounts_of(alice)[PURSE],
        accounts_of(bob)[PURSE],
        4000,
        actor=system_actor,
        now=now,
    )
    meal(bob, 1200, "pos-1:2")

    report = verify(session)

    assert report.ok, report.problems
    assert report.trial_balance_fen == 0
    assert report.lines == count_rows(Line)
