"""``/ledger``: the journal (read-only), reversals, and verification."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard.platform.db.tenancy import get_scoped
from onecard.platform.errors import NotFound
from onecard.platform.ledger import reconcile
from onecard.platform.ledger.models import Entry, Line
from onecard.web.api.base import Call, QueryModel, endpoint, paged
from onecard.web.api.common import submit_entry_action


def entry_json(session: Session, entry: Entry) -> dict[str, Any]:
    """An entry with its lines (signed: debit > 0, credit < 0)."""
    lines = session.execute(
        select(Line.account_id, Line.amount_fen).where(Line.entry_id == entry.id).order_by(Line.id)
    )
    return {
        "id": entry.id,
        "code": entry.code,
        "memo": entry.memo,
        "idempotency_key": entry.idempotency_key,
        "occurred_at": entry.occurred_at.isoformat(),
        "recorded_at": entry.recorded_at.isoformat(),
        "source": entry.source,
        "actor": {"type": entry.actor_type, "id": entry.actor_id},
        "reverses_id": entry.reverses_id,
        "lines": [{"account_id": a, "amount_fen": amt} for a, amt in lines],
    }


class EntriesQuery(QueryModel):
    """Filters of the journal."""

    code: str | None = Field(default=None, max_length=60)
    account_id: int | None = None
    recorded_from: datetime | None = None
    recorded_to: datetime | None = None
    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0)


@endpoint(
    "GET",
    "/ledger/entries",
    tag="ledger",
    query=EntriesQuery,
    list_response=True,
    permission="ledger.view",
)
def list_entries(call: Call) -> Any:
    """Journal entries, newest first, filtered by code, account and time."""
    q: EntriesQuery = call.query
    stmt = select(Entry)
    if q.code:
        stmt = stmt.where(Entry.code == q.code)
    if q.account_id is not None:
        stmt = stmt.where(
            Entry.id.in_(select(Line.entry_id).where(Line.account_id == q.account_id))
        )
    if q.recorded_from:
        stmt = stmt.where(Entry.recorded_at >= q.recorded_from)
    if q.recorded_to:
        stmt = stmt.where(Entry.recorded_at < q.recorded_to)
    total = call.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = call.session.scalars(stmt.order_by(Entry.id.desc()).limit(q.limit).offset(q.offset))
    return paged([entry_json(call.session, e) for e in rows], total, q.limit, q.offset)


@endpoint("GET", "/ledger/entries/{entry_id}", tag="ledger", permission="ledger.view")
def get_entry(call: Call) -> Any:
    """One entry with its lines."""
    entry = get_scoped(call.session, Entry, call.path["entry_id"])
    if entry is None:
        raise NotFound(f"entry {call.path['entry_id']} not found")
    return entry_json(call.session, entry)


class ReversalIn(BaseModel):
    """Why the entry is reversed."""

    model_config = ConfigDict(extra="forbid", strict=True)
    memo: str = Field(min_length=3, max_length=200)


@endpoint(
    "POST",
    "/ledger/entries/{entry_id}/reversal",
    tag="ledger",
    body=ReversalIn,
    status=201,
    idempotent_key=True,
    permission="accounts.refund",
)
def reverse_entry(call: Call) -> Any:
    """Reverse an entry (a refund or correction); above the threshold needs approval (202)."""
    entry = get_scoped(call.session, Entry, call.path["entry_id"])
    if entry is None:
        raise NotFound(f"entry {call.path['entry_id']} not found")
    amount = call.session.scalar(
        select(func.sum(Line.amount_fen)).where(Line.entry_id == entry.id, Line.amount_fen > 0)
    )
    return submit_entry_action(
        call,
        "reversal",
        {"entry_id": entry.id, "memo": call.body.memo},
        amount_fen=int(amount or 0),
        summary=f"reverse entry {entry.id} ({entry.code}): {call.body.memo}",
    )


@endpoint("GET", "/ledger/verify", tag="ledger", permission="ledger.view")
def verify(call: Call) -> Any:
    """Recompute balances from the journal and report any drift."""
    report = reconcile.verify(call.session)
    return {
        "ok": report.ok,
        "accounts": report.accounts,
        "entries": report.entries,
        "lines": report.lines,
        "trial_balance_fen": report.trial_balance_fen,
        "problems": list(report.problems),
    }
