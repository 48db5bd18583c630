"""The audit viewer: events with filters (server-side pages) and the chain's verification."""

from __future__ import annotations

from typing import Any

from flask import request
from sqlalchemy import func, select

from onecard.platform.audit.models import AuditEvent
from onecard.platform.audit.record import verify_chain
from onecard.web.console.core import Ctx, bp, page, render
from onecard.web.console.forms import Pager, paging

FILTERS = ("type", "actor_id", "object_type", "object_id")


@bp.get("/audit", endpoint="audit")
@page("audit.view")
def audit_list(ctx: Ctx) -> Any:
    """Audit events, newest first; ``verify=1`` recomputes the hash chain first."""
    limit, offset = paging()
    values = {f: request.args.get(f, "").strip()[:80] for f in FILTERS}
    stmt = select(AuditEvent.id)
    for name, value in values.items():
        if value:
            stmt = stmt.where(getattr(AuditEvent, name) == value)
    total = ctx.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    page_ids = stmt.order_by(AuditEvent.seq.desc()).limit(limit).offset(offset)
    events = list(
        ctx.session.scalars(
            select(AuditEvent).where(AuditEvent.id.in_(page_ids)).order_by(AuditEvent.seq.desc())
        )
    )
    report = verify_chain(ctx.session) if request.args.get("verify") == "1" else None
    return render(
        "console/audit.html",
        events=events,
        pager=Pager(total, limit, offset),
        values=values,
        report=report,
    )
