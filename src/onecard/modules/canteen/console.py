"""Canteen's console pages: merchants and their POS, daily settlement with its exceptions,
offline reconciliation cases, and merchant payouts.

A blueprint of the module's own (``canteen``, under ``/console/canteen``), mounted through
``onecard_blueprints``. Views run in the console's ``@page`` unit of work and carry its CSRF
check, security headers and menu; they call canteen's services and show domain errors as flash
messages, in the console's language.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, abort, flash, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from werkzeug.exceptions import HTTPException

from onecard.modules.canteen import cases, payout, settlement
from onecard.modules.canteen.models import Merchant, Pos, ReconCase, Refund, Sale, Settlement
from onecard.modules.canteen.offline import DECIDED_ONLINE
from onecard.modules.canteen.services import KEY
from onecard.platform.db.tenancy import get_scoped
from onecard.platform.errors import OneCardError
from onecard.platform.tenants.models import Site
from onecard.platform.tenants.services import enabled_module_keys
from onecard.web.console.core import Ctx, domain_error_page, http_error_page, page, to
from onecard.web.console.forms import confirm_page, confirmed
from onecard.web.console.messages import localise
from onecard.web.console.security import add_headers, check_csrf

# The closed vocabularies the pages show (statement and payout status, exception and case
# kinds, POS modes), so that they are extracted and translated.
WORDS = {
    "balanced": _l("balanced"),
    "exceptions": _l("exceptions"),
    "not_requested": _l("not requested"),
    "awaiting_approval": _l("awaiting approval"),
    "posted": _l("paid out"),
    "rejected": _l("rejected"),
    "pos_report_missing": _l("POS total not reported"),
    "pos_total_mismatch": _l("POS total differs from the records"),
    "record_without_posting": _l("record never posted"),
    "posting_mismatch": _l("posting differs from the record"),
    "posting_without_record": _l("posting without a record"),
    "offline_overspend": _l("offline overspend"),
    "bad_mac": _l("POS MAC failed"),
    "bad_tac": _l("card TAC refused"),
    "fixed": _l("fixed price"),
    "free": _l("free amount"),
    "menu": _l("menu"),
}


def word(key: str | None) -> str:
    """``key`` of one of canteen's vocabularies in the console language."""
    return str(WORDS.get(key or "", key or ""))


bp = Blueprint("canteen", __name__, url_prefix="/console/canteen", template_folder="templates")
bp.before_request(check_csrf)


@bp.after_request
def _headers(response: Response) -> Response:
    return add_headers(response)


@bp.context_processor
def _words() -> dict[str, Any]:
    # Menu, sites and tenant switcher come from the console's own context processor (`page`).
    return {"word": word}


# Errors render as on the console's own pages (same template, menu dropped, localised).
bp.register_error_handler(OneCardError, domain_error_page)
bp.register_error_handler(HTTPException, http_error_page)


def canteen_page(permission: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``@page(permission)`` for a tenant that has the canteen module switched on (else 404)."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def enabled_only(ctx: Ctx, **kwargs: Any) -> Any:
            if KEY not in enabled_module_keys(ctx.session):
                abort(404)
            return view(ctx, **kwargs)

        return page(permission)(enabled_only)

    return decorate


def _merchants(ctx: Ctx) -> list[Merchant]:
    return list(ctx.session.scalars(select(Merchant).order_by(Merchant.code).limit(500)))


def _today(ctx: Ctx, merchant: Merchant) -> date:
    site = ctx.session.get(Site, merchant.site_id)
    zone = ZoneInfo(site.timezone if site else "UTC")
    return ctx.now.astimezone(zone).date()


def takings_fen(ctx: Ctx, merchant: Merchant, day: date) -> int:
    """Sales of ``day`` net of refunds (offline copies of online sales not counted twice)."""
    sales = ctx.session.scalars(
        select(Sale).where(Sale.merchant_id == merchant.id, Sale.business_day == day)
    )
    gross = sum(s.amount_fen for s in sales if DECIDED_ONLINE not in (s.flags or []))
    back = ctx.session.scalar(
        select(func.coalesce(func.sum(Refund.amount_fen), 0)).where(
            Refund.merchant_id == merchant.id, Refund.business_day == day
        )
    )
    return gross - int(back or 0)


@bp.get("/")
@canteen_page("canteen.view")
def index(ctx: Ctx) -> Any:
    """Merchants, their POS terminals and today's takings."""
    rows = []
    for merchant in _merchants(ctx):
        pos = ctx.session.scalars(
            select(Pos).where(Pos.merchant_id == merchant.id).order_by(Pos.device_id)
        )
        today = _today(ctx, merchant)
        rows.append((merchant, list(pos), today, takings_fen(ctx, merchant, today)))
    return render_template("canteen/index.html", rows=rows)


def _terminals(ctx: Ctx, merchant: Merchant) -> list[Pos]:
    return list(
        ctx.session.scalars(
            select(Pos).where(Pos.merchant_id == merchant.id).order_by(Pos.device_id)
        )
    )


def pos_reports(terminals: list[Pos], form: Any) -> dict[str, settlement.PosReport]:
    """The end-of-day totals typed in from each POS's slip (班结): ``count_<pos id>`` sales
    and ``amount_<pos id>`` in yuan. A terminal with both left blank has not reported.

    :raises ValueError: with a message for the page when a value is not a whole count or an
        amount in yuan with at most two decimals, or only one of the two is given.
    """
    out: dict[str, settlement.PosReport] = {}
    for pos in terminals:
        count = form.get(f"count_{pos.id}", "").strip()
        amount = form.get(f"amount_{pos.id}", "").strip()
        if not count and not amount:
            continue
        fen = _fen(amount)
        if not count.isdigit() or fen is None:
            text = _("POS %(device)s: give the sales and the amount in yuan.", device=pos.device_id)
            raise ValueError(text)
        out[pos.device_id] = settlement.PosReport(int(count), fen)
    return out


def _fen(yuan: str) -> int | None:
    whole, dot, cents = yuan.partition(".")
    if not whole.isdigit() or (dot and not (cents.isdigit() and len(cents) <= 2)):
        return None
    return int(whole) * 100 + int((cents or "0").ljust(2, "0"))


def _merchant_arg(ctx: Ctx, source: Any) -> Merchant | None:
    raw = source.get("merchant_id", "")
    return get_scoped(ctx.session, Merchant, int(raw)) if raw.isdigit() else None


def _day_arg(source: Any) -> date | None:
    try:
        return date.fromisoformat(source.get("day", ""))
    except ValueError:
        return None


def _statement(ctx: Ctx, merchant: Merchant, day: date) -> Settlement | None:
    return ctx.session.scalar(
        select(Settlement).where(
            Settlement.merchant_id == merchant.id, Settlement.business_day == day
        )
    )


def exception_row(exc: dict[str, Any]) -> dict[str, Any]:
    """One exception of a statement as the page's table shows it (amounts in fen or None)."""
    if exc.get("device"):
        ref = exc["device"]
    elif exc.get("sale_id"):
        ref = f"#{exc['sale_id']}"
    else:
        ref = f"E{exc.get('entry_id', '')}"
    records = next((exc[k] for k in ("records_fen", "record_fen", "amount_fen") if k in exc), None)
    return {
        "kind": exc.get("kind", ""),
        "ref": ref,
        "records_fen": records,
        "ledger_fen": exc.get("ledger_fen"),
        "pos_fen": exc.get("pos_fen"),
    }


@bp.get("/settlement")
@canteen_page("canteen.view")
def settlement_view(ctx: Ctx) -> Any:
    """Pick a merchant and business day; show its statement when there is one."""
    merchant, day = _merchant_arg(ctx, request.args), _day_arg(request.args)
    found = _statement(ctx, merchant, day) if merchant and day else None
    return render_template(
        "canteen/settlement.html",
        merchants=_merchants(ctx),
        merchant=merchant,
        day=day or (_today(ctx, merchant) if merchant else ctx.now.date()),
        statement=settlement.statement_json(found) if found else None,
        terminals=_terminals(ctx, merchant) if merchant else [],
        exceptions=[exception_row(e) for e in found.exceptions] if found else [],
        statement_id=found.id if found else None,
    )


@bp.post("/settlement")
@canteen_page("canteen.settle")
def settlement_settle(ctx: Ctx) -> Any:
    """Run the day's settlement (after a confirm step) against the POS end-of-day totals the
    cashiers' slips give (typed in per terminal); a terminal left blank has not reported and
    shows as ``pos_report_missing``."""
    merchant, day = _merchant_arg(ctx, request.form), _day_arg(request.form)
    if merchant is None or day is None:
        flash(_("Choose a merchant and a business day."), "error")
        return to("canteen.settlement_view")
    try:
        reports = pos_reports(_terminals(ctx, merchant), request.form)
    except ValueError as exc:
        flash(str(exc), "error")
        return to("canteen.settlement_view", merchant_id=merchant.id, day=day.isoformat())
    if not confirmed():
        return confirm_page(
            _("Settle %(name)s for %(day)s", name=merchant.name, day=day.isoformat()),
            _("The statement is written once and cannot be changed; refunds of the day stop."),
        )
    try:
        settlement.settle_day(ctx.session, merchant, day, reports, actor=ctx.actor, now=ctx.now)
    except OneCardError as exc:
        flash(localise(exc.message), "error")
    else:
        flash(_("Statement written."), "success")
    return to("canteen.settlement_view", merchant_id=merchant.id, day=day.isoformat())


def _settled_statement(ctx: Ctx, statement_id: int) -> Settlement:
    found = ctx.session.get(Settlement, statement_id)
    if found is None:
        abort(404)
    return found


def _back_to(statement: Settlement) -> Response:
    day = statement.business_day.isoformat()
    return to("canteen.settlement_view", merchant_id=statement.merchant_id, day=day)


@bp.post("/settlement/<int:statement_id>/payout")
@canteen_page("canteen.settle")
def payout_request(ctx: Ctx, statement_id: int) -> Any:
    """Pay the merchant what the ledger credited it (or file it for a second operator)."""
    statement = _settled_statement(ctx, statement_id)
    if not confirmed():
        return confirm_page(
            _("Pay out the statement"), _("The merchant's takings leave for the bank.")
        )
    try:
        payout.request_payout(ctx.session, ctx.tenant, statement, actor=ctx.actor, now=ctx.now)
    except OneCardError as exc:
        flash(localise(exc.message), "error")
    else:
        flash(_("Payout: %(status)s.", status=word(statement.payout_status)), "success")
    return _back_to(statement)


@bp.post("/settlement/<int:statement_id>/payout/decide")
@canteen_page("canteen.payout.approve")
def payout_decide(ctx: Ctx, statement_id: int) -> Any:
    """A second operator approves or rejects a waiting payout."""
    statement = _settled_statement(ctx, statement_id)
    approve = request.form.get("decision") == "approve"
    if not confirmed():
        title = _("Approve the payout") if approve else _("Reject the payout")
        return confirm_page(title, _("This decision is final."))
    try:
        payout.decide_payout(ctx.session, statement, approve, actor=ctx.actor, now=ctx.now)
    except OneCardError as exc:
        flash(localise(exc.message), "error")
    else:
        flash(_("Payout: %(status)s.", status=word(statement.payout_status)), "success")
    return _back_to(statement)


@bp.get("/cases")
@canteen_page("canteen.view")
def cases_view(ctx: Ctx) -> Any:
    """Open reconciliation cases, oldest first."""
    return render_template("canteen/cases.html", cases=cases.open_cases(ctx.session))


@bp.post("/cases/<int:case_id>/settle")
@canteen_page("canteen.cases.settle")
def case_settle(ctx: Ctx, case_id: int) -> Any:
    """Collect what the holder owes, close the case and ask for the card's unfreeze."""
    case = ctx.session.get(ReconCase, case_id)
    if case is None:
        abort(404)
    if not confirmed():
        return confirm_page(
            _("Settle the case of card %(no)s", no=case.card_no),
            _("What the holder owes is taken from the purse; the unfreeze needs approval."),
        )
    note = request.form.get("note", "").strip()[:200]
    try:
        cases.settle_case(ctx.session, ctx.tenant, case, actor=ctx.actor, now=ctx.now, note=note)
    except OneCardError as exc:
        flash(localise(exc.message), "error")
    else:
        flash(_("Case settled."), "success")
    return to("canteen.cases_view")
