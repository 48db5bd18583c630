"""Replacing a card (补卡) and taking it back (退卡): what happens to deposit, purse and subsidy.

The holder in these examples paid a 2000 fen deposit, topped up 5000 fen in cash and was granted
a 300 fen meal subsidy.
"""

import pytest
from sqlalchemy import select

from onecard.platform.cards import blacklist, lifecycle
from onecard.platform.errors import Conflict
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import tenant_account
from onecard.platform.ledger.models import Entry

PURSE, SUBSIDY, DEPOSIT = ops.PURSE, ops.SUBSIDY, ops.DEPOSIT


@pytest.fixture
def holder(session, make_person, system_actor, now):
    person = make_person(name="Li Lei")
    ops.top_up(session, person.id, 5000, channel="cash", actor=system_actor, now=now)
    ops.grant_subsidy(session, person.id, 300, actor=system_actor, now=now)
    return person


@pytest.fixture
def card(holder, make_card):
    return make_card(holder, card_no="OLD00001", deposit_fen=2000)


@pytest.fixture
def holdings(accounts_of, balance):
    """Factory: a holder's balances, ``{"purse": fen, "subsidy": fen, "deposit": fen}``."""

    def _holdings(person):
        accounts = accounts_of(person)
        return {kind.split(".")[1]: balance(accounts[kind]) for kind in (PURSE, SUBSIDY, DEPOSIT)}

    return _holdings


# --- replace -------------------------------------------------------------------------------


def test_replacement_card_is_active_and_carries_the_deposit(session, card, system_actor, now):
    new = lifecycle.replace(session, card, "NEW00001", actor=system_actor, now=now)

    assert (new.status, new.deposit_fen, new.person_id) == ("active", 2000, card.person_id)
    assert (card.status, card.deposit_fen, card.replaced_by_id) == ("replaced", 0, new.id)


def test_replacing_a_card_moves_no_money(
    session, holder, card, holdings, count_rows, system_actor, now
):
    before, entries = holdings(holder), count_rows(Entry)

    lifecycle.replace(session, card, "NEW00002", actor=system_actor, now=now)

    assert holdings(holder) == before == {"purse": 5000, "subsidy": 300, "deposit": 2000}
    assert count_rows(Entry) == entries


def test_replaced_card_is_blacklisted_and_the_new_one_is_not(session, card, system_actor, now):
    lifecycle.replace(session, card, "NEW00003", actor=system_actor, now=now)

    assert blacklist.snapshot(session) == (1, ["OLD00001"])


def test_replacing_a_lost_card_needs_no_new_blacklist_version(session, card, system_actor, now):
    lifecycle.report_loss(session, card, actor=system_actor, now=now)

    lifecycle.replace(session, card, "NEW00004", actor=system_actor, now=now)

    assert blacklist.snapshot(session) == (1, ["OLD00001"])


def test_replacing_with_a_taken_card_number_changes_nothing(
    session, holder, card, make_card, system_actor, now
):
    make_card(holder, card_no="TAKEN001")

    with pytest.raises(Conflict):
        lifecycle.replace(session, card, "TAKEN001", actor=system_actor, now=now)

    assert card.status == "active"
    assert blacklist.current_version(session) == 0


# --- return --------------------------------------------------------------------------------


def test_returning_the_last_card_pays_deposit_and_purse_in_cash(
    session, holder, card, holdings, balance, system_actor, now
):
    cash_desk = tenant_account(session, "cash_desk")
    cash_before = balance(cash_desk)

    quote = lifecycle.return_card(session, card, actor=system_actor, now=now)

    assert (quote.deposit_fen, quote.purse_fen, quote.cash_fen) == (2000, 5000, 7000)
    assert balance(cash_desk) == cash_before - 7000
    assert holdings(holder) == {"purse": 0, "subsidy": 0, "deposit": 0}


def test_returning_the_last_card_reclaims_the_subsidy_instead_of_paying_it(
    session, holder, card, balance, system_actor, now
):
    expense = tenant_account(session, "subsidy_expense")

    quote = lifecycle.return_card(session, card, actor=system_actor, now=now)

    assert quote.subsidy_fen == 300
    assert balance(expense) == 0  # granted 300, reclaimed 300


def test_returning_the_last_card_posts_release_refund_and_reclaim(session, card, system_actor, now):
    lifecycle.return_card(session, card, actor=system_actor, now=now)

    codes = session.scalars(
        select(Entry.code)
        .where(Entry.idempotency_key.like(f"card:{card.id}:return:%"))
        .order_by(Entry.id)
    )
    assert list(codes) == ["deposit.release", "refund.cash", "subsidy.reclaim"]


def test_returning_one_of_two_cards_pays_back_only_its_deposit(
    session, holder, card, make_card, holdings, system_actor, now
):
    make_card(holder, card_no="SECOND01")

    quote = lifecycle.return_card(session, card, actor=system_actor, now=now)

    assert (quote.deposit_fen, quote.purse_fen, quote.subsidy_fen) == (2000, 0, 0)
    assert holdings(holder) == {"purse": 5000, "subsidy": 300, "deposit": 0}


def test_returned_card_is_blacklisted_and_keeps_no_deposit(session, card, system_actor, now):
    lifecycle.return_card(session, card, actor=system_actor, now=now)

    assert (card.status, card.deposit_fen) == ("returned", 0)
    assert blacklist.snapshot(session) == (1, ["OLD00001"])


def test_quote_tells_the_counter_what_a_return_would_pay(session, card, now):
    quote = lifecycle.quote_return(session, card, now=now)

    assert (quote.deposit_fen, quote.purse_fen, quote.subsidy_fen) == (2000, 5000, 300)
    assert card.status == "active"
