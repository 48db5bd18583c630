"""The rules every posting obeys: idempotency, balance, minimums, immutability, reconciliation."""

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from onecard.platform.errors import (
    DuplicateRequest,
    ImmutableRecordError,
    InsufficientFunds,
    Unbalanced,
    ValidationFailed,
)
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import tenant_account
from onecard.platform.ledger.models import Balance, Entry, Line
from onecard.platform.ledger.posting import LineSpec, PostingRequest, post, was_replayed
from onecard.platform.ledger.reconcile import verify

BUG_REFUSED_POSTING = (
    "bug: posting.post inserts the entry row before _check_minimums raises InsufficientFunds, so "
    "a caller that catches the refusal and commits keeps a line-less entry under the key"
)
BUG_VERIFY_BLIND = (
    "bug: reconcile._unbalanced_entries groups ledger_lines by entry, so an entry with no lines "
    "at all is never reported"
)


@pytest.fixture
def purse(accounts_of, make_person):
    return accounts_of(make_person())[ops.PURSE]


@pytest.fixture
def cash_desk(session):
    return tenant_account(session, "cash_desk")


@pytest.fixture
def funded(session, purse, system_actor, now):
    """The purse holds 1000 fen, topped up in cash."""
    ops.top_up(session, purse.owner_id, 1000, channel="cash", actor=system_actor, now=now)
    return purse


def cash_top_up(cash_desk, purse, fen, key, **extra):
    return PostingRequest(
        code="topup.cash",
        idempotency_key=key,
        lines=(LineSpec(cash_desk.id, fen), LineSpec(purse.id, -fen)),
        **extra,
    )


# --- idempotency ---------------------------------------------------------------------------


def test_same_key_and_content_returns_the_first_entry(
    session, cash_desk, purse, balance, count_rows, system_actor, now
):
    first = post(
        session, cash_top_up(cash_desk, purse, 700, "till-3:42"), actor=system_actor, now=now
    )

    again = post(
        session, cash_top_up(cash_desk, purse, 700, "till-3:42"), actor=system_actor, now=now
    )

    assert again.id == first.id
    assert was_replayed(again)
    assert balance(purse) == 700
    assert count_rows(Line) == 2


def test_same_key_with_other_content_raises_duplicate_request(
    session, cash_desk, purse, balance, system_actor, now
):
    post(session, cash_top_up(cash_desk, purse, 700, "till-3:43"), actor=system_actor, now=now)

    with pytest.raises(DuplicateRequest):
        post(session, cash_top_up(cash_desk, purse, 800, "till-3:43"), actor=system_actor, now=now)
    assert balance(purse) == 700


def test_charge_replayed_after_balances_changed_returns_the_first_entry(
    session, funded, merchant, balance, system_actor, now
):
    first = ops.charge(
        session,
        funded.owner_id,
        merchant,
        600,
        code="canteen.meal",
        idempotency_key="pos-1:9",
        actor=system_actor,
        now=now,
    )

    again = ops.charge(
        session,
        funded.owner_id,
        merchant,
        600,
        code="canteen.meal",
        idempotency_key="pos-1:9",
        actor=system_actor,
        now=now,
    )

    assert again.id == first.id
    assert balance(funded) == 400


def test_charge_replayed_with_another_amount_raises_duplicate_request(
    session, funded, merchant, system_actor, now
):
    ops.charge(
        session,
        funded.owner_id,
        merchant,
        600,
        code="canteen.meal",
        idempotency_key="pos-1:10",
        actor=system_actor,
        now=now,
    )

    with pytest.raises(DuplicateRequest):
        ops.charge(
            session,
            funded.owner_id,
            merchant,
            300,
            code="canteen.meal",
            idempotency_key="pos-1:10",
            actor=system_actor,
            now=now,
        )


# --- validation ----------------------------------------------------------------------------


def test_unbalanced_entry_is_refused_and_nothing_is_written(
    session, cash_desk, purse, count_rows, system_actor, now
):
    request = PostingRequest(
        code="topup.cash",
        idempotency_key="bad-1",
        lines=(LineSpec(cash_desk.id, 1000), LineSpec(purse.id, -999)),
    )

    with pytest.raises(Unbalanced):
        post(session, request, actor=system_actor, now=now)
    assert count_rows(Entry) == 0


def test_entry_with_a_single_line_is_refused(session, cash_desk, system_actor, now):
    request = PostingRequest(
        code="x.y", idempotency_key="bad-2", lines=(LineSpec(cash_desk.id, 1000),)
    )

    with pytest.raises(ValidationFailed):
        post(session, request, actor=system_actor, now=now)


def test_fractional_fen_are_refused(session, cash_desk, purse, system_actor, now):
    request = PostingRequest(
        code="topup.cash",
        idempotency_key="bad-3",
        lines=(LineSpec(cash_desk.id, 10.5), LineSpec(purse.id, -10.5)),
    )

    with pytest.raises(ValidationFailed):
        post(session, request, actor=system_actor, now=now)


# --- minimum balances ----------------------------------------------------------------------


def test_insufficient_funds_names_the_account_and_the_shortfall(session, funded, system_actor, now):
    with pytest.raises(InsufficientFunds) as refused:
        ops.refund(session, funded.owner_id, 1500, actor=system_actor, now=now)

    assert refused.value.details["account_id"] == funded.id
    assert refused.value.details["shortfall_fen"] == 500


def test_refused_charge_writes_nothing(
    session, funded, merchant, balance, count_rows, system_actor, now
):
    entries = count_rows(Entry)

    with pytest.raises(InsufficientFunds):
        ops.charge(
            session,
            funded.owner_id,
            merchant,
            1001,
            code="canteen.meal",
            idempotency_key="pos-2:1",
            actor=system_actor,
            now=now,
        )
    session.commit()

    assert count_rows(Entry) == entries
    assert balance(funded) == 1000
    assert verify(session).ok


def test_refused_refund_leaves_no_entry_behind(session, funded, count_rows, system_actor, now):
    entries = count_rows(Entry)

    with pytest.raises(InsufficientFunds):
        ops.refund(
            session, funded.owner_id, 1500, actor=system_actor, now=now, idempotency_key="refund-1"
        )
    session.commit()

    assert count_rows(Entry) == entries


def test_refused_refund_leaves_cached_balances_equal_to_the_journal(
    session, funded, system_actor, now
):
    with pytest.raises(InsufficientFunds):
        ops.refund(session, funded.owner_id, 1500, actor=system_actor, now=now)
    session.commit()

    assert verify(session).ok


def test_refund_retried_with_its_key_after_a_refusal_moves_money(
    session, funded, balance, system_actor, now
):
    with pytest.raises(InsufficientFunds):
        ops.refund(
            session, funded.owner_id, 1500, actor=system_actor, now=now, idempotency_key="refund-2"
        )
    session.commit()
    ops.top_up(session, funded.owner_id, 500, channel="cash", actor=system_actor, now=now)

    ops.refund(
        session, funded.owner_id, 1500, actor=system_actor, now=now, idempotency_key="refund-2"
    )

    assert balance(funded) == 0


def test_verify_reports_an_entry_without_lines(session, session_factory, funded, now):
    session.add(
        Entry(
            idempotency_key="orphan-1",
            request_hash="0" * 64,
            code="topup.cash",
            occurred_at=now,
            recorded_at=now,
            source="platform",
            actor_type="system",
            actor_id="tests",
            reference={},
        )
    )
    session.commit()

    with session_factory() as fresh:
        assert not verify(fresh).ok


# --- immutability --------------------------------------------------------------------------


@pytest.fixture
def posted(session, funded):
    """The top-up entry of ``funded``, committed."""
    session.commit()
    return session.scalar(select(Entry))


@pytest.mark.parametrize("change", ["update", "delete"])
def test_entries_cannot_be_changed_through_the_orm(session, posted, change):
    if change == "update":
        posted.memo = "edited afterwards"
    else:
        session.delete(posted)

    with pytest.raises(ImmutableRecordError):
        session.flush()
    session.rollback()


@pytest.mark.parametrize("change", ["update", "delete"])
def test_lines_cannot_be_changed_through_the_orm(session, posted, change):
    line = session.scalar(select(Line).where(Line.entry_id == posted.id))
    if change == "update":
        line.amount_fen = 1
    else:
        session.delete(line)

    with pytest.raises(ImmutableRecordError):
        session.flush()
    session.rollback()


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_lines SET amount_fen = amount_fen * 2 WHERE entry_id = :id",
        "DELETE FROM ledger_lines WHERE entry_id = :id",
        "UPDATE ledger_entries SET memo = 'edited' WHERE id = :id",
    ],
)
def test_database_refuses_raw_changes_to_the_journal(session, posted, statement):
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(text(statement), {"id": posted.id})
    session.rollback()


@pytest.mark.postgres_only
def test_database_refuses_to_commit_an_unbalanced_entry(session, posted, cash_desk, tenant):
    session.execute(
        text(
            "INSERT INTO ledger_lines (tenant_id, entry_id, account_id, amount_fen) "
            "VALUES (:t, :e, :a, 5)"
        ),
        {"t": tenant.id, "e": posted.id, "a": cash_desk.id},
    )

    with pytest.raises(DBAPIError, match="does not balance"):
        session.commit()
    session.rollback()


# --- reconciliation ------------------------------------------------------------------------


def test_verify_finds_a_consistent_ledger_ok(session, funded, merchant, system_actor, now):
    ops.charge(
        session,
        funded.owner_id,
        merchant,
        400,
        code="canteen.meal",
        idempotency_key="pos-3:1",
        actor=system_actor,
        now=now,
    )
    session.commit()

    report = verify(session)

    assert report.ok, report.problems
    assert (report.entries, report.lines, report.trial_balance_fen) == (2, 4, 0)


def test_verify_reports_a_cached_balance_that_drifted_from_the_journal(
    session, session_factory, funded, tenant
):
    session.execute(
        text("UPDATE ledger_balances SET raw_fen = raw_fen - 1 WHERE account_id = :a"),
        {"a": funded.id},
    )
    session.commit()

    with session_factory() as fresh:
        report = verify(fresh)

    assert not report.ok
    assert any(funded.code in problem for problem in report.problems)


def test_balance_cache_tracks_line_counts(session, funded, merchant, system_actor, now):
    ops.charge(
        session,
        funded.owner_id,
        merchant,
        100,
        code="canteen.meal",
        idempotency_key="pos-4:1",
        actor=system_actor,
        now=now,
    )

    cached = session.scalar(select(Balance).where(Balance.account_id == funded.id))

    assert (cached.raw_fen, cached.line_count) == (-900, 2)
