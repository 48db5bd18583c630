"""Four-eyes rules and the approval queue.

:func:`submit` runs an action at once when no second operator is needed, or files an
:class:`Approval` and raises nothing: it returns an :class:`Outcome` saying which happened.
:func:`decide` lets a *different* operator approve (the action then runs, with both names in
the audit trail) or reject. Needing approval: refunds and adjustments above the tenant's
``approval_threshold_fen``, card returns whose payout exceeds it, every blacklist removal
(unfreeze), and every deletion of a person.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.platform.actors import Actor
from onecard.platform.approvals.models import Approval
from onecard.platform.audit.record import record
from onecard.platform.cards import lifecycle
from onecard.platform.cards.models import Card
from onecard.platform.db.tenancy import get_scoped
from onecard.platform.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.models import Account
from onecard.platform.people.services import get_person, mark_deleted
from onecard.platform.tenants.models import Tenant
from onecard.platform.tenants.services import tenant_setting

Executor = Callable[[Session, dict[str, Any], Actor, datetime], dict[str, Any]]


@dataclass(frozen=True)
class ActionKind:
    """An action that may need approval: its permission and how to run it."""

    permission: str
    run: Executor
    always: bool = False  # True: approval needed whatever the amount


def _run_refund(session: Session, p: dict[str, Any], actor: Actor, now: datetime) -> dict[str, Any]:
    entry = ops.refund(
        session,
        p["person_id"],
        p["amount_fen"],
        actor=actor,
        now=now,
        idempotency_key=p["idempotency_key"],
        memo=p.get("memo", ""),
    )
    return {"entry_id": entry.id}


def _run_adjust(session: Session, p: dict[str, Any], actor: Actor, now: datetime) -> dict[str, Any]:
    account = get_scoped(session, Account, p["account_id"])
    if account is None:
        raise NotFound(f"account {p['account_id']} not found")
    entry = ops.adjust(
        session,
        account,
        p["amount_fen"],
        actor=actor,
        now=now,
        reason=p["reason"],
        idempotency_key=p["idempotency_key"],
    )
    return {"entry_id": entry.id}


def _run_unfreeze(
    session: Session, p: dict[str, Any], actor: Actor, now: datetime
) -> dict[str, Any]:
    card = lifecycle.get_card(session, p["card_id"], actor=actor)
    lifecycle.unfreeze(session, card, actor=actor, now=now)
    return {"card_id": card.id, "status": card.status}


def _run_return(session: Session, p: dict[str, Any], actor: Actor, now: datetime) -> dict[str, Any]:
    card = lifecycle.get_card(session, p["card_id"], actor=actor)
    quote = lifecycle.return_card(session, card, actor=actor, now=now)
    return {
        "card_id": card.id,
        "deposit_fen": quote.deposit_fen,
        "purse_fen": quote.purse_fen,
        "subsidy_reclaimed_fen": quote.subsidy_fen,
    }


def _run_delete_person(
    session: Session, p: dict[str, Any], actor: Actor, now: datetime
) -> dict[str, Any]:
    person = get_person(session, p["person_id"], actor=actor)
    mark_deleted(session, person, actor=actor, now=now)
    return {"person_id": person.id}


def _run_reversal(
    session: Session, p: dict[str, Any], actor: Actor, now: datetime
) -> dict[str, Any]:
    from onecard.platform.ledger.models import Entry
    from onecard.platform.ledger.posting import reverse

    entry = get_scoped(session, Entry, p["entry_id"])
    if entry is None:
        raise NotFound(f"entry {p['entry_id']} not found")
    reversal = reverse(
        session,
        entry,
        idempotency_key=p["idempotency_key"],
        actor=actor,
        now=now,
        memo=p.get("memo", ""),
    )
    record(
        session,
        "ledger.reversed",
        actor=actor,
        now=now,
        object_type="entry",
        object_id=reversal.id,
        data={"reverses": entry.id},
    )
    return {"entry_id": reversal.id, "reverses_id": entry.id}


KINDS: dict[str, ActionKind] = {
    "reversal": ActionKind("accounts.refund", _run_reversal),
    "refund": ActionKind("accounts.refund", _run_refund),
    "adjustment": ActionKind("accounts.adjust", _run_adjust),
    "card.unfreeze": ActionKind("cards.unfreeze", _run_unfreeze, always=True),
    "card.return": ActionKind("cards.return", _run_return),
    "person.delete": ActionKind("people.delete", _run_delete_person, always=True),
}


@dataclass(frozen=True)
class Outcome:
    """Either the action ran (``result``) or it waits for a second operator (``approval``)."""

    approval: Approval | None = None
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def pending(self) -> bool:
        """True when the action waits for approval."""
        return self.approval is not None


def submit(
    session: Session,
    tenant: Tenant,
    kind: str,
    payload: dict[str, Any],
    *,
    actor: Actor,
    now: datetime,
    summary: str,
    amount_fen: int | None = None,
    idempotency_key: str | None = None,
) -> Outcome:
    """Run ``kind`` now, or file it for approval when the four-eyes rule applies."""
    action = KINDS[kind]
    actor.ensure(action.permission)
    if idempotency_key:
        earlier = session.scalar(
            select(Approval).where(Approval.idempotency_key == idempotency_key)
        )
        if earlier is not None:
            return _replay(earlier, kind, payload)
    threshold = int(tenant_setting(tenant, "approval_threshold_fen"))
    if not action.always and (amount_fen is None or abs(amount_fen) <= threshold):
        return Outcome(result=action.run(session, payload, actor, now))
    approval = Approval(
        kind=kind,
        status="pending",
        payload=payload,
        summary=summary[:300],
        amount_fen=amount_fen,
        idempotency_key=idempotency_key,
        requested_by=actor.operator_id or 0,
        requested_by_name=actor.id or "",
        requested_at=now,
    )
    session.add(approval)
    session.flush()
    record(
        session,
        "approval.requested",
        actor=actor,
        now=now,
        object_type="approval",
        object_id=approval.id,
        data={"kind": kind, "summary": approval.summary, "amount_fen": amount_fen},
    )
    return Outcome(approval=approval)


def _replay(earlier: Approval, kind: str, payload: dict[str, Any]) -> Outcome:
    if earlier.kind != kind or earlier.payload != payload:
        raise Conflict("idempotency key was already used for a different request")
    return Outcome(approval=earlier)


def get_approval(session: Session, approval_id: int) -> Approval:
    """The approval ``approval_id`` of the tenant in scope."""
    approval = get_scoped(session, Approval, approval_id)
    if approval is None:
        raise NotFound(f"approval {approval_id} not found")
    return approval


def decide(
    session: Session,
    approval: Approval,
    approve: bool,
    *,
    actor: Actor,
    now: datetime,
    note: str = "",
) -> Approval:
    """Approve (and run) or reject ``approval``; the decider must differ from the requester."""
    actor.ensure("approvals.decide")
    if approval.status != "pending":
        raise Conflict(f"approval is already {approval.status}")
    if actor.operator_id is not None and actor.operator_id == approval.requested_by:
        raise PermissionDenied("the requester cannot decide their own request")
    if len(note) > 300:
        raise ValidationFailed("note is too long", field="note")
    action = KINDS[approval.kind]
    approval.decided_by, approval.decided_by_name = actor.operator_id, actor.id
    approval.decided_at, approval.decision_note = now, note
    if approve:
        actor.ensure(action.permission)
        approval.result = action.run(session, dict(approval.payload), actor, now)
        approval.status = "approved"
    else:
        approval.status = "rejected"
    record(
        session,
        f"approval.{approval.status}",
        actor=actor,
        now=now,
        object_type="approval",
        object_id=approval.id,
        data={
            "kind": approval.kind,
            "requested_by": approval.requested_by_name,
            "result": approval.result,
        },
    )
    return approval


def list_approvals(
    session: Session, *, status: str | None, limit: int, offset: int
) -> tuple[list[Approval], int]:
    """Approvals of the tenant in scope, newest first, with the total count."""
    from sqlalchemy import func

    stmt = select(Approval)
    if status:
        stmt = stmt.where(Approval.status == status)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(Approval.id.desc()).limit(limit).offset(offset))
    return list(rows), total


def card_for_approval(session: Session, card_id: int, *, actor: Actor) -> Card:
    """Load a card through the scope checks before filing an approval about it."""
    return lifecycle.get_card(session, card_id, actor=actor)
