"""Reconciliation cases: exceptions found in uploaded POS records that someone has to settle.

One case per card, business day and kind (later records of the same day join it):
``offline_overspend`` (a card spent beyond its offline allowance or its purses across POS; the
card is frozen with reason ``canteen_overspend``), ``bad_mac`` (a record whose POS MAC does not
verify) and ``bad_tac`` (a card-purse record the clearing verifier refused). Settling collects
what the holder owes and asks for the unfreeze through the platform's four-eyes approvals.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard.modules.canteen.context import audit_event
from onecard.modules.canteen.models import ReconCase, Sale
from onecard.modules.canteen.services import KEY
from onecard.platform.actors import Actor
from onecard.platform.approvals import services as approvals
from onecard.platform.cards import blacklist, lifecycle
from onecard.platform.cards.models import Card, CardStatus
from onecard.platform.errors import Conflict
from onecard.platform.ledger.accounts import holder_account, tenant_account
from onecard.platform.ledger.operations import PURSE
from onecard.platform.ledger.posting import LineSpec, PostingRequest, post
from onecard.platform.tenants.models import Tenant

FREEZE_REASON = "canteen_overspend"


def open_case(
    session: Session, sale: Sale, kind: str, detail: dict[str, Any], *, actor: Actor, now: datetime
) -> ReconCase:
    """Open the case of ``sale``'s card, day and ``kind`` (audited), or add the sale to it."""
    case = session.scalar(
        select(ReconCase).where(
            ReconCase.card_no == sale.card_no,
            ReconCase.business_day == sale.business_day,
            ReconCase.kind == kind,
        )
    )
    if case is None:
        case = ReconCase(
            kind=kind,
            card_no=sale.card_no,
            card_id=sale.card_id,
            person_id=sale.person_id,
            business_day=sale.business_day,
            status="open",
            sale_ids=[sale.id],
            detail=detail,
            opened_at=now,
        )
        session.add(case)
        session.flush()
        data = {"kind": kind, "card_no": sale.card_no, "detail": detail}
        audit_event(session, "canteen.case.opened", case.id, data, actor, now, obj="canteen_case")
    else:
        case.detail, case.status = detail, "open"
        case.sale_ids = sorted({*case.sale_ids, sale.id})
    session.flush()
    return case


def freeze_card(session: Session, card_id: int | None, *, actor: Actor, now: datetime) -> bool:
    """Freeze an active card for an overspend case; False when there was nothing to freeze."""
    card = session.get(Card, card_id) if card_id else None
    if card is None or card.status != CardStatus.ACTIVE.value:
        return False
    lifecycle.freeze(session, card, actor=actor, now=now, reason=FREEZE_REASON)
    return True


@dataclass(frozen=True)
class CaseSettled:
    """What settling did: the collection entry, and the unfreeze (done or awaiting approval)."""

    case_id: int
    collected_entry_id: int | None
    unfreeze: approvals.Outcome | None


def open_cases(session: Session, card_no: str | None = None) -> list[ReconCase]:
    """Open reconciliation cases, oldest first (of one card when ``card_no`` is given)."""
    stmt = select(ReconCase).where(ReconCase.status == "open")
    if card_no is not None:
        stmt = stmt.where(ReconCase.card_no == card_no)
    return list(session.scalars(stmt.order_by(ReconCase.id)))


def settle_case(
    session: Session,
    tenant: Tenant,
    case: ReconCase,
    *,
    actor: Actor,
    now: datetime,
    note: str = "",
) -> CaseSettled:
    """Settle a case: collect what the holder owes from the purse (the holder topped up
    first), close the case, and, when it was the card's last open case, ask for the unfreeze
    through the platform's approvals (a blacklist removal always needs a second operator)."""
    actor.ensure("canteen.cases.settle")
    if case.status != "open":
        raise Conflict("the case is already settled", case_id=case.id)
    entry_id = _collect(session, case, actor=actor, now=now) if case.receivable_fen else None
    case.status, case.settled_at, case.settled_by = "settled", now, actor.id
    session.flush()
    data = {"entry_id": entry_id, "receivable_fen": case.receivable_fen, "note": note}
    audit_event(session, "canteen.case.settled", case.id, data, actor, now, obj="canteen_case")
    return CaseSettled(case.id, entry_id, _request_unfreeze(session, tenant, case, actor, now))


def _collect(session: Session, case: ReconCase, *, actor: Actor, now: datetime) -> int:
    """Dr the holder's purse, Cr receivables: raises ``InsufficientFunds`` before a top-up."""
    assert case.person_id is not None
    purse = holder_account(session, case.person_id, PURSE, now=now)
    receivables = tenant_account(session, "receivables")
    request = PostingRequest(
        code="canteen.overspend_collected",
        lines=(
            LineSpec(purse.id, case.receivable_fen),
            LineSpec(receivables.id, -case.receivable_fen),
        ),
        idempotency_key=f"canteen:case:{case.id}:collect",
        source=KEY,
        reference={"case_id": case.id},
    )
    return post(session, request, actor=actor, now=now).id


def _request_unfreeze(
    session: Session, tenant: Tenant, case: ReconCase, actor: Actor, now: datetime
) -> approvals.Outcome | None:
    card = session.get(Card, case.card_id) if case.card_id else None
    if card is None or card.status != CardStatus.FROZEN.value or open_cases(session, card.card_no):
        return None
    changes = blacklist.history(session, card.id)
    if not changes or changes[-1].reason != FREEZE_REASON:
        return None  # frozen for another reason: not ours to lift
    return approvals.submit(
        session,
        tenant,
        "card.unfreeze",
        {"card_id": card.id},
        actor=actor,
        now=now,
        summary=f"Unfreeze card {card.card_no}: canteen case {case.id} settled",
        idempotency_key=f"canteen:case:{case.id}:unfreeze",
    )


def receivable_of(session: Session, person_id: int) -> int:
    """What the holder owes from offline sales not yet collected (open cases)."""
    total = session.scalar(
        select(func.coalesce(func.sum(ReconCase.receivable_fen), 0)).where(
            ReconCase.person_id == person_id, ReconCase.status == "open"
        )
    )
    return int(total or 0)
