"""Response shapes shared by several API areas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from onecard.platform.approvals.services import Outcome
from onecard.web.api.base import Out, dump


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
