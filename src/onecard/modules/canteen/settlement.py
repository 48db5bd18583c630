"""Daily merchant settlement with a three-way reconciliation.

For one merchant and one business day (local midnights of the merchant's site) three sources
must agree: what each POS says it took (its end-of-day totals), what was uploaded and recorded
as sales (net of refunds), and what the ledger posted to the merchant's account. Every
disagreement becomes an exception on the statement; a statement without exceptions is
``balanced``. Sales paid from CPU card purses count like the others: their clearing entry
credits the merchant. Paying the merchant out is the next step
(:mod:`onecard.modules.canteen.payout`); :func:`statement_json` shows both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select, union
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import CompoundSelect

from onecard.modules.canteen import rules
from onecard.modules.canteen.context import audit_event, get_or_raise
from onecard.modules.canteen.models import Merchant, Pos, Refund, Sale, Settlement
from onecard.modules.canteen.offline import DECIDED_ONLINE
from onecard.platform.actors import Actor
from onecard.platform.ledger.models import Entry, Line
from onecard.platform.tenants.models import Site


@dataclass(frozen=True)
class PosReport:
    """A POS's own end-of-day totals: sales kept (refunds taken out) and their amount."""

    count: int
    amount_fen: int


def settle_day(
    session: Session,
    merchant: Merchant,
    day: date,
    pos_reports: Mapping[str, PosReport],
    *,
    actor: Actor,
    now: datetime,
) -> Settlement:
    """Write the merchant's statement for ``day`` (once; a repeat returns the first)."""
    actor.ensure("canteen.settle")
    earlier = session.scalar(
        select(Settlement).where(
            Settlement.merchant_id == merchant.id, Settlement.business_day == day
        )
    )
    if earlier is not None:
        return earlier
    # An offline copy of a sale the platform already made online is a fact of the POS, not a
    # second sale: counting it would double the day's takings.
    sales = [
        s
        for s in session.scalars(
            select(Sale).where(Sale.merchant_id == merchant.id, Sale.business_day == day)
        )
        if DECIDED_ONLINE not in (s.flags or [])
    ]
    refunds = list(
        session.scalars(
            select(Refund).where(Refund.merchant_id == merchant.id, Refund.business_day == day)
        )
    )
    refunded = {r.sale_id for r in refunds}
    kept = [s for s in sales if s.id not in refunded]
    exceptions = _pos_leg(session, merchant, sales, refunded, pos_reports)
    ledger_fen, ledger_exc = _ledger_leg(session, merchant, day, sales, refunds)
    exceptions += ledger_exc
    gross, back = sum(s.amount_fen for s in sales), sum(r.amount_fen for r in refunds)
    statement = Settlement(
        merchant_id=merchant.id,
        business_day=day,
        sales_count=len(kept),
        gross_fen=gross,
        refunds_fen=back,
        net_fen=gross - back,
        ledger_fen=ledger_fen,
        pos_totals={
            k: {"count": v.count, "amount_fen": v.amount_fen} for k, v in pos_reports.items()
        },
        exceptions=exceptions,
        status="exceptions" if exceptions else "balanced",
        created_at=now,
        created_by=actor.id,
    )
    session.add(statement)
    session.flush()
    data = {"day": day.isoformat(), "net_fen": statement.net_fen, "exceptions": len(exceptions)}
    audit_event(
        session,
        "canteen.settlement.created",
        statement.id,
        data,
        actor,
        now,
        obj="canteen_settlement",
    )
    return statement


def _pos_leg(
    session: Session,
    merchant: Merchant,
    sales: list[Sale],
    refunded: set[int],
    reports: Mapping[str, PosReport],
) -> list[dict[str, Any]]:
    """POS totals against the recorded sales (refunds taken out), terminal by terminal."""
    device_of = dict(
        session.execute(select(Pos.id, Pos.device_id).where(Pos.merchant_id == merchant.id)).all()
    )
    recorded: dict[str, list[int]] = {device_of[s.pos_id]: [0, 0] for s in sales}
    for s in sales:
        if s.id not in refunded:
            tally = recorded[device_of[s.pos_id]]
            tally[0] += 1
            tally[1] += s.amount_fen
    out: list[dict[str, Any]] = []
    for device in sorted(set(recorded) | set(reports)):
        count, fen = recorded.get(device, [0, 0])
        report = reports.get(device)
        if report is None:
            out.append({"kind": "pos_report_missing", "device": device, "records_fen": fen})
        elif (report.count, report.amount_fen) != (count, fen):
            out.append(
                {
                    "kind": "pos_total_mismatch",
                    "device": device,
                    "pos_count": report.count,
                    "pos_fen": report.amount_fen,
                    "records_count": count,
                    "records_fen": fen,
                }
            )
    return out


def _ledger_leg(
    session: Session,
    merchant: Merchant,
    day: date,
    sales: list[Sale],
    refunds: list[Refund],
) -> tuple[int, list[dict[str, Any]]]:
    """Recorded sales and refunds against the merchant account's postings.

    Expected: each sale credits the merchant its amount, each refund debits it back. Postings
    to the merchant during the day that no sale or refund explains are listed too.
    """
    expected = {s.entry_id: s.amount_fen for s in sales if s.entry_id is not None}
    expected.update({r.entry_id: -r.amount_fen for r in refunds})
    out: list[dict[str, Any]] = [
        {
            "kind": "record_without_posting",
            "sale_id": s.id,
            "amount_fen": s.amount_fen,
            "flags": s.flags,
        }
        for s in sales
        if s.entry_id is None
    ]
    posted = _merchant_postings(session, merchant.account_id, list(expected))
    for entry_id, want in sorted(expected.items()):
        got = posted.get(entry_id, 0)
        if got != want:
            out.append(
                {
                    "kind": "posting_mismatch",
                    "entry_id": entry_id,
                    "record_fen": want,
                    "ledger_fen": got,
                }
            )
    for entry_id, got in sorted(_unexplained(session, merchant, day).items()):
        out.append({"kind": "posting_without_record", "entry_id": entry_id, "ledger_fen": got})
    return sum(posted.values()), out


def _merchant_postings(session: Session, account_id: int, entry_ids: list[int]) -> dict[int, int]:
    """What each entry credited the merchant (normal balance change of a liability)."""
    if not entry_ids:
        return {}
    rows = session.execute(
        select(Line.entry_id, func.sum(Line.amount_fen))
        .where(Line.account_id == account_id, Line.entry_id.in_(entry_ids))
        .group_by(Line.entry_id)
    )
    return {eid: -int(total) for eid, total in rows}


def _unexplained(session: Session, merchant: Merchant, day: date) -> dict[int, int]:
    site = get_or_raise(session, Site, merchant.site_id)
    start, end = rules.day_bounds(day, site.timezone)
    # Sales and refunds explain their entries; a payout (which debits the merchant on the day
    # it is made) belongs to the statement it pays, not to that day's sales.
    explained: CompoundSelect[Any] = union(
        select(Sale.entry_id).where(Sale.entry_id.is_not(None)),
        select(Refund.entry_id),
        select(Settlement.payout_entry_id).where(Settlement.payout_entry_id.is_not(None)),
    )
    rows = session.execute(
        select(Line.entry_id, func.sum(Line.amount_fen))
        .join(Entry, Entry.id == Line.entry_id)
        .where(
            Line.account_id == merchant.account_id,
            Entry.occurred_at >= start,
            Entry.occurred_at < end,
            Line.entry_id.not_in(explained),
        )
        .group_by(Line.entry_id)
    )
    return {eid: -int(total) for eid, total in rows}


def statement_json(statement: Settlement) -> dict[str, Any]:
    """The statement as the console, API or command line show it, payout included."""
    return {
        "merchant_id": statement.merchant_id,
        "business_day": statement.business_day.isoformat(),
        "status": statement.status,
        "sales_count": statement.sales_count,
        "gross_fen": statement.gross_fen,
        "refunds_fen": statement.refunds_fen,
        "net_fen": statement.net_fen,
        "ledger_fen": statement.ledger_fen,
        "pos_totals": statement.pos_totals,
        "exceptions": statement.exceptions,
        "payout": {
            "status": statement.payout_status or "not_requested",
            "amount_fen": statement.payout_fen,
            "entry_id": statement.payout_entry_id,
            "requested_by": statement.payout_requested_by,
            "decided_by": statement.payout_decided_by,
            "at": statement.payout_at.isoformat() if statement.payout_at else None,
        },
    }
