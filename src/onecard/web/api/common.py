"""Response shapes shared by several API areas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from onecard.platform.approvals.services import Outcome, submit
from onecard.platform.db.tenancy import get_scoped
from onecard.web.api.base import Call, Out, dump


class ApprovalOut(Out):
    """A four-eyes request."""

    id: int
    kind: str
    status: str
    summary: str
    amount_fen: int | None
    requested_by_name: str
    requested_at: datetime
    decided_by_name: str | None
    decided_at: datetime | None
    decision_note: str
    result: dict[str, Any]


def approval_response(outcome: Outcome) -> tuple[dict[str, Any], int]:
    """202 with the approval when one was filed, else 200 with the result."""
    if outcome.approval is not None:
        return {"status": "pending_approval", "approval": dump(ApprovalOut, outcome.approval)}, 202
    return {"status": "done", "result": outcome.result}, 200


def submit_entry_action(
    call: Call, kind: str, payload: dict[str, Any], *, amount_fen: int, summary: str
) -> tuple[dict[str, Any], int]:
    """Run a money action that may need four-eyes approval; answer 201 with its entry or 202.

    The request's ``Idempotency-Key`` (or a fresh one) keys the entry the action posts; a
    request that waits for approval is keyed ``approval:<key>`` so a retry finds it again.
    """
    from onecard.platform.ledger.models import Entry
    from onecard.platform.ledger.operations import new_key
    from onecard.web.api.ledger import entry_json

    assert call.tenant is not None
    key = call.idempotency_key or new_key()
    outcome = submit(
        call.session,
        call.tenant,
        kind,
        {**payload, "idempotency_key": key},
        actor=call.actor,
        now=call.now,
        amount_fen=amount_fen,
        summary=summary,
        idempotency_key=f"approval:{key}" if call.idempotency_key else None,
    )
    if outcome.pending:
        return approval_response(outcome)
    entry = get_scoped(call.session, Entry, outcome.result["entry_id"])
    assert entry is not None
    return entry_json(call.session, entry), 201
