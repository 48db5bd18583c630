"""The journal: ledger entries with their lines, newest first (read-only)."""

from __future__ import annotations

from typing import Any

from flask import request
from sqlalchemy import func, select

from onecard.platform.ledger.models import Account, Entry, Line
from onecard.web.console.core import Ctx, bp, page, render
from onecard.web.console.forms import Pager, paging


@bp.get("/journal", endpoint="ledger")
@page("ledger.view")
def journal(ctx: Ctx) -> Any:
    """Entries filtered by code, with their lines (server-side pages)."""
    limit, offset = paging()
    code = request.args.get("code", "").strip()[:60]
    stmt = select(Entry.id)
    if code:
        stmt = stmt.where(Entry.code == code)
    total = ctx.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    entries = list(
        ctx.session.scalars(
            select(Entry)
            .where(Entry.id.in_(stmt.order_by(Entry.id.desc()).limit(limit).offset(offset)))
            .order_by(Entry.id.desc())
        )
    )
    lines: dict[int, list[tuple[str, int]]] = {e.id: [] for e in entries}
    if entries:
        for entry_id, acc_code, amount in ctx.session.execute(
            select(Line.entry_id, Account.code, Line.amount_fen)
            .join(Account, Account.id == Line.account_id)
            .where(Line.entry_id.in_(list(lines)))
            .order_by(Line.id)
        ):
            lines[entry_id].append((acc_code, amount))
    return render(
        "console/journal.html",
        entries=entries,
        lines=lines,
        pager=Pager(total, limit, offset),
        code=code,
    )
