"""``/audit``: the audit trail (read-only) and its chain verification."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field
from sqlalchemy import func, select

from onecard.platform.audit.models import AuditEvent
from onecard.platform.audit.record import verify_chain
from onecard.web.api.base import Call, Out, QueryModel, dump, endpoint, paged


class AuditOut(Out):
    """One audit event."""

    id: int
    seq: int
    type: str
    actor_type: str
    actor_id: str | None
    object_type: str | None
    object_id: str | None
    data: dict[str, Any]
    occurred_at: datetime
    ip: str | None
    request_id: str | None
    hash: str


class AuditQuery(QueryModel):
    """Filters of the audit trail."""

    type: str | None = Field(default=None, max_length=80)
    actor_id: str | None = Field(default=None, max_length=64)
    object_type: str | None = Field(default=None, max_length=40)
    object_id: str | None = Field(default=None, max_length=64)
    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0)


@endpoint(
    "GET",
    "/audit/events",
    tag="audit",
    query=AuditQuery,
    response=AuditOut,
    list_response=True,
    permission="audit.view",
)
def list_events(call: Call) -> Any:
    """Audit events, newest first."""
    q: AuditQuery = call.query
    stmt = select(AuditEvent)
    for column, value in (
        (AuditEvent.type, q.type),
        (AuditEvent.actor_id, q.actor_id),
        (AuditEvent.object_type, q.object_type),
        (AuditEvent.object_id, q.object_id),
    ):
        if value:
            stmt = stmt.where(column == value)
    total = call.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = call.session.scalars(
        stmt.order_by(AuditEvent.seq.desc()).limit(q.limit).offset(q.offset)
    )
    return paged([dump(AuditOut, e) for e in rows], total, q.limit, q.offset)


@endpoint("GET", "/audit/verify", tag="audit", permission="audit.view")
def verify(call: Call) -> Any:
    """Recompute the hash chain; name the first altered row."""
    report = verify_chain(call.session)
    bad = report.first_bad
    return {
        "ok": bad is None,
        "events": report.events,
        "first_bad": None
        if bad is None
        else {"id": bad.id, "seq": bad.seq, "problem": report.problem},
    }
