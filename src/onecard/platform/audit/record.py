"""Writing and verifying audit events.

:func:`record` appends in the caller's transaction, so an event exists exactly when the change
it describes was committed. The chain's sequence comes from a locked per-tenant counter, which
orders concurrent writers; each event's hash covers its content and the previous event's hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.platform.actors import Actor
from onecard.platform.audit.models import AuditEvent
from onecard.platform.db.counters import next_value
from onecard.platform.db.tenancy import require_tenant_id

GENESIS = "0" * 64
_COUNTER = "audit.seq"


@dataclass(frozen=True)
class RequestInfo:
    """Where an action came from (set by the web layer or the bridge)."""

    ip: str | None = None
    request_id: str | None = None


_request: ContextVar[RequestInfo | None] = ContextVar("onecard_audit_request", default=None)


@contextmanager
def request_context(info: RequestInfo) -> Iterator[None]:
    """Attach ``info`` to every audit event recorded inside the block."""
    token = _request.set(info)
    try:
        yield
    finally:
        _request.reset(token)


def record(
    session: Session,
    type: str,
    *,
    actor: Actor,
    now: datetime,
    object_type: str | None = None,
    object_id: object = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append an audit event for the tenant in scope; never commits."""
    seq = next_value(session, _COUNTER)
    prev = GENESIS
    if seq > 1:
        prev = session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == seq - 1)) or GENESIS
    req = _request.get() or RequestInfo()
    event = AuditEvent(
        tenant_id=require_tenant_id(),
        seq=seq,
        type=type,
        actor_type=actor.type,
        actor_id=actor.id,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id),
        data=_json_safe(data or {}),
        occurred_at=now,
        ip=req.ip,
        request_id=req.request_id,
        prev_hash=prev,
    )
    event.hash = event_hash(event)
    session.add(event)
    session.flush()
    return event


def _json_safe(data: dict[str, Any]) -> dict[str, Any]:
    # Round-trip so that what we hash is exactly what the JSON column gives back.
    return json.loads(json.dumps(data, default=str, ensure_ascii=False))  # type: ignore[no-any-return]


def event_hash(event: AuditEvent) -> str:
    """SHA-256 over the event's content and ``prev_hash`` (canonical JSON)."""
    body = {
        "tenant_id": event.tenant_id,
        "seq": event.seq,
        "type": event.type,
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "data": event.data,
        "occurred_at": event.occurred_at.isoformat(timespec="microseconds"),
        "ip": event.ip,
        "request_id": event.request_id,
        "prev_hash": event.prev_hash,
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    """Result of :func:`verify_chain`: ``first_bad`` is ``None`` when the chain is intact."""

    events: int
    first_bad: AuditEvent | None
    problem: str | None


def verify_chain(session: Session, *, batch: int = 5000) -> ChainReport:
    """Recompute the chain of the tenant in scope; report the first altered or missing row."""
    prev, expected_seq, count = GENESIS, 1, 0
    for event in _events_in_order(session, batch):
        count += 1
        problem = _check(event, prev, expected_seq)
        if problem:
            return ChainReport(count, event, problem)
        prev, expected_seq = event.hash, expected_seq + 1
    return ChainReport(count, None, None)


def _check(event: AuditEvent, prev: str, expected_seq: int) -> str | None:
    if event.seq != expected_seq:
        return f"sequence jumps from {expected_seq - 1} to {event.seq} (rows removed)"
    if event.prev_hash != prev:
        return "previous-hash link broken"
    if event_hash(event) != event.hash:
        return "content does not match its hash (row altered)"
    return None


def _events_in_order(session: Session, batch: int) -> Iterator[AuditEvent]:
    last = 0
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        for row in rows:  # keep memory flat on long chains
            session.expunge(row)
