"""The four-eyes queue: requests filed by one operator, decided by another."""

from __future__ import annotations

from typing import Any

from flask import flash, request
from flask_babel import gettext as _

from onecard.platform.approvals import services as approvals
from onecard.platform.errors import OneCardError
from onecard.web.console.core import Ctx, bp, page, render, to
from onecard.web.console.forms import Pager, confirm_page, confirmed, paging
from onecard.web.console.i18n import yuan
from onecard.web.console.messages import localise

STATUSES = ("pending", "approved", "rejected")


@bp.get("/approvals", endpoint="approvals")
@page("approvals.view")
def approvals_list(ctx: Ctx) -> Any:
    """Requests by status (pending first), newest first."""
    limit, offset = paging()
    status = request.args.get("status", "pending")
    rows, total = approvals.list_approvals(
        ctx.session,
        status=status if status in STATUSES else None,
        limit=limit,
        offset=offset,
    )
    return render(
        "console/approvals/list.html",
        rows=rows,
        pager=Pager(total, limit, offset),
        status=status,
        statuses=STATUSES,
    )


@bp.post("/approvals/<int:approval_id>/<any(approve,reject):decision>")
@page("approvals.decide")
def approval_decide(ctx: Ctx, approval_id: int, decision: str) -> Any:
    """Approve (the action runs now, in your name) or reject a colleague's request."""
    approval = approvals.get_approval(ctx.session, approval_id)
    note = request.form.get("note", "").strip()[:300]
    approve = decision == "approve"
    if not confirmed():
        title = (
            _("Approve request #%(id)s", id=approval.id)
            if approve
            else _("Reject request #%(id)s", id=approval.id)
        )
        message = (
            _("The action runs now and the audit trail names you as the approver.")
            if approve
            else _("The request is closed and nothing happens.")
        )
        details = [
            (_("Request"), approval.summary),
            (_("Requested by"), approval.requested_by_name),
        ]
        if approval.amount_fen is not None:
            details.append((_("Amount"), yuan(approval.amount_fen)))
        return confirm_page(title, message, details)
    try:
        approvals.decide(ctx.session, approval, approve, actor=ctx.actor, now=ctx.now, note=note)
    except OneCardError as exc:
        ctx.session.rollback()
        flash(localise(exc.message), "error")
        return to("console.approvals")
    flash(_("Request approved.") if approve else _("Request rejected."), "success")
    return to("console.approvals", status="pending")
