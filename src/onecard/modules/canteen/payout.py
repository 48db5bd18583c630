"""Merchant payouts: what the ledger credited a merchant on a settled day leaves the merchant's
settlement account for the bank: Dr ``Liabilities:Merchants:…`` / Cr ``Assets:Bank:Clearing``.

One payout per statement (merchant and business day), posted under the idempotency key
``canteen:payout:<merchant id>:<day>``, so asking again never pays twice. The amount is the
statement's ``ledger_fen``: what was posted to the merchant for that day's sales, net of
refunds; recorded sales that were never posted (bad MAC, bad TAC) are not paid. A payout above
the tenant's four-eyes threshold (``approval_threshold_fen``, the platform's limit for refunds
and adjustments) waits for a second operator, who approves or rejects it. Every step is audited
and the statement shows where its payout stands.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from onecard.modules.canteen.context import audit_event, get_or_raise
from onecard.modules.canteen.models import Merchant, Settlement
from onecard.modules.canteen.services import KEY
from onecard.platform.actors import Actor
from onecard.platform.errors import Conflict, PermissionDenied, ValidationFailed
from onecard.platform.ledger.accounts import tenant_account
from onecard.platform.ledger.posting import LineSpec, PostingRequest, post
from onecard.platform.tenants.models import Tenant
from onecard.platform.tenants.services import tenant_setting

AWAITING, POSTED, REJECTED = "awaiting_approval", "posted", "rejected"
PAYOUT_CODE = "canteen.payout"
PAYOUT_ACCOUNT = "bank_clearing"


def request_payout(
    session: Session, tenant: Tenant, statement: Settlement, *, actor: Actor, now: datetime
) -> Settlement:
    """Pay the statement's merchant what the ledger credited it that day, or file the payout
    for a second operator when it is above the four-eyes threshold. A repeat while it waits or
    after it was posted returns the statement unchanged; after a rejection it asks again."""
    actor.ensure("canteen.settle")
    if statement.payout_status in (AWAITING, POSTED):
        return statement
    if statement.ledger_fen <= 0:
        raise ValidationFailed("the statement has nothing to pay out", settlement_id=statement.id)
    statement.payout_fen, statement.payout_requested_by = statement.ledger_fen, actor.id
    statement.payout_decided_by, statement.payout_at = None, None
    if statement.ledger_fen > int(tenant_setting(tenant, "approval_threshold_fen")):
        statement.payout_status = AWAITING
        session.flush()
        _audit(session, "canteen.payout.requested", statement, actor, now)
        return statement
    return _post(session, statement, actor=actor, now=now)


def decide_payout(
    session: Session, statement: Settlement, approve: bool, *, actor: Actor, now: datetime
) -> Settlement:
    """A second operator approves (the payout is posted) or rejects a waiting payout."""
    actor.ensure("canteen.payout.approve")
    if statement.payout_status != AWAITING:
        raise Conflict("no payout of this statement awaits approval", settlement_id=statement.id)
    if actor.id == statement.payout_requested_by:
        raise PermissionDenied("the requester cannot decide their own payout")
    statement.payout_decided_by = actor.id
    if approve:
        return _post(session, statement, actor=actor, now=now)
    statement.payout_status, statement.payout_at = REJECTED, now
    session.flush()
    _audit(session, "canteen.payout.rejected", statement, actor, now)
    return statement


def _post(session: Session, statement: Settlement, *, actor: Actor, now: datetime) -> Settlement:
    merchant = get_or_raise(session, Merchant, statement.merchant_id)
    amount, day = statement.ledger_fen, statement.business_day.isoformat()
    request = PostingRequest(
        code=PAYOUT_CODE,
        lines=(
            LineSpec(merchant.account_id, amount),
            LineSpec(tenant_account(session, PAYOUT_ACCOUNT).id, -amount),
        ),
        idempotency_key=f"canteen:payout:{merchant.id}:{day}",
        memo=f"canteen payout to {merchant.code} for {day}",
        occurred_at=now,
        source=KEY,
        reference={"settlement_id": statement.id, "merchant_id": merchant.id, "day": day},
    )
    entry = post(session, request, actor=actor, now=now)
    statement.payout_status, statement.payout_entry_id, statement.payout_at = POSTED, entry.id, now
    session.flush()
    _audit(session, "canteen.payout.posted", statement, actor, now)
    return statement


def _audit(
    session: Session, type_: str, statement: Settlement, actor: Actor, now: datetime
) -> None:
    data = {
        "merchant_id": statement.merchant_id,
        "day": statement.business_day.isoformat(),
        "amount_fen": statement.payout_fen,
        "entry_id": statement.payout_entry_id,
        "requested_by": statement.payout_requested_by,
        "decided_by": statement.payout_decided_by,
    }
    audit_event(session, type_, statement.id, data, actor, now, obj="canteen_settlement")
