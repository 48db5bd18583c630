"""Four eyes: large refunds, unfreezes and deletions wait for a second operator.

Alice works the counter and files requests; Bob approves or rejects them. The tenant's threshold
is the default 50000 fen (500.00 yuan).
"""

import pytest
from sqlalchemy import select

from onecard.platform.approvals import services as approvals
from onecard.platform.audit.models import AuditEvent
from onecard.platform.cards import blacklist, lifecycle
from onecard.platform.errors import Conflict, PermissionDenied
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import balance_of, holder_account


@pytest.fixture
def alice(make_operator):
    return make_operator("alice")[1]


@pytest.fixture
def bob(make_operator):
    return make_operator("bob")[1]


@pytest.fixture
def holder(session, make_person, system_actor, now):
    """A holder with 80000 fen in the purse."""
    person = make_person()
    ops.top_up(session, person.id, 80000, channel="cash", actor=system_actor, now=now)
    return person


@pytest.fixture
def purse_balance(session, holder, now):
    return lambda: balance_of(session, holder_account(session, holder.id, ops.PURSE, now=now))


@pytest.fixture
def submit(session, tenant, now):
    """Factory: file ``kind`` as ``actor`` (the console's submit button)."""

    def _submit(kind, payload, *, actor, amount_fen=None, key=None):
        return approvals.submit(
            session,
            tenant,
            kind,
            payload,
            actor=actor,
            now=now,
            summary=f"{kind} test",
            amount_fen=amount_fen,
            idempotency_key=key,
        )

    return _submit


@pytest.fixture
def refund_request(submit, holder, alice):
    """Factory: Alice asks to refund ``fen`` from the holder's purse."""

    def _refund(fen, key="refund-1"):
        payload = {"person_id": holder.id, "amount_fen": fen, "idempotency_key": key}
        return submit("refund", payload, actor=alice, amount_fen=fen, key=key)

    return _refund


@pytest.fixture
def decide(session, now):
    def _decide(outcome, approve, actor):
        return approvals.decide(session, outcome.approval, approve, actor=actor, now=now)

    return _decide


def test_refund_at_the_threshold_runs_at_once(refund_request, purse_balance):
    outcome = refund_request(50000)

    assert not outcome.pending
    assert purse_balance() == 30000


def test_refund_above_the_threshold_files_an_approval_and_moves_no_money(
    refund_request, purse_balance
):
    outcome = refund_request(60000)

    assert outcome.pending
    assert outcome.approval.status == "pending"
    assert purse_balance() == 80000


def test_approved_refund_moves_the_money(refund_request, decide, bob, purse_balance):
    outcome = refund_request(60000)

    decide(outcome, True, bob)

    assert outcome.approval.status == "approved"
    assert purse_balance() == 20000


def test_approved_refund_names_both_operators_in_the_audit_trail(
    session, refund_request, decide, bob
):
    outcome = refund_request(60000)
    decide(outcome, True, bob)

    trail = [
        (e.type, e.actor_id)
        for e in session.scalars(
            select(AuditEvent)
            .where(
                AuditEvent.type.in_(["approval.requested", "approval.approved", "ledger.refund"])
            )
            .order_by(AuditEvent.seq)
        )
    ]
    assert trail == [
        ("approval.requested", "alice"),
        ("ledger.refund", "bob"),
        ("approval.approved", "bob"),
    ]


def test_requester_cannot_approve_their_own_request(refund_request, decide, alice, purse_balance):
    outcome = refund_request(60000)

    with pytest.raises(PermissionDenied):
        decide(outcome, True, alice)
    assert purse_balance() == 80000


def test_rejected_refund_moves_nothing(refund_request, decide, bob, purse_balance):
    outcome = refund_request(60000)

    decide(outcome, False, bob)

    assert outcome.approval.status == "rejected"
    assert purse_balance() == 80000


def test_a_decided_request_cannot_be_decided_again(refund_request, decide, bob, make_operator):
    outcome = refund_request(60000)
    decide(outcome, False, bob)
    carol = make_operator("carol")[1]

    with pytest.raises(Conflict):
        decide(outcome, True, carol)


def test_replay_with_the_same_key_returns_the_same_approval(refund_request):
    first = refund_request(60000, key="refund-7")

    again = refund_request(60000, key="refund-7")

    assert again.approval.id == first.approval.id


def test_same_key_for_another_request_is_refused(refund_request):
    refund_request(60000, key="refund-8")

    with pytest.raises(Conflict):
        refund_request(70000, key="refund-8")


@pytest.fixture
def lost_card(session, holder, make_card, system_actor, now):
    card = make_card(holder)
    lifecycle.report_loss(session, card, actor=system_actor, now=now)
    return card


def test_unfreeze_always_needs_approval(submit, lost_card, alice):
    outcome = submit("card.unfreeze", {"card_id": lost_card.id}, actor=alice)

    assert outcome.pending
    assert lost_card.status == "lost"


def test_approved_unfreeze_takes_the_card_off_the_blacklist(
    session, submit, decide, lost_card, alice, bob
):
    outcome = submit("card.unfreeze", {"card_id": lost_card.id}, actor=alice)

    decide(outcome, True, bob)

    assert lost_card.status == "active"
    assert blacklist.snapshot(session) == (2, [])


def test_person_deletion_needs_approval(submit, holder, alice):
    outcome = submit("person.delete", {"person_id": holder.id}, actor=alice)

    assert outcome.pending
    assert holder.deleted_at is None


def test_approved_deletion_blacklists_the_persons_cards(
    session, submit, decide, holder, make_card, alice, bob
):
    cards = [make_card(holder, card_no=no) for no in ("DEL00001", "DEL00002")]
    outcome = submit("person.delete", {"person_id": holder.id}, actor=alice)

    decide(outcome, True, bob)

    assert holder.deleted_at is not None
    assert [c.status for c in cards] == ["expired", "expired"]
    assert blacklist.snapshot(session)[1] == ["DEL00001", "DEL00002"]
