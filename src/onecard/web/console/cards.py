"""Card pages: list, detail with blacklist status and per-device receipts, issue, report loss,
freeze, unfreeze (four-eyes), replace, return (deposit and balance refund) and receipts."""

from __future__ import annotations

from typing import Any

from flask import flash, request
from flask_babel import gettext as _
from sqlalchemy import func, select

from onecard.platform.approvals import services as approvals
from onecard.platform.audit.models import AuditEvent
from onecard.platform.cards import blacklist, lifecycle
from onecard.platform.cards.models import Card, CardKind, CardStatus
from onecard.platform.devices import lists
from onecard.platform.errors import OneCardError
from onecard.platform.ledger.models import Entry, Line
from onecard.platform.people.models import Person
from onecard.platform.people.services import get_person
from onecard.web.console.core import Ctx, bp, page, render, to
from onecard.web.console.forms import (
    FormErrors,
    Pager,
    confirm_page,
    confirmed,
    form_values,
    paging,
    parse_yuan,
)
from onecard.web.console.messages import localise

KINDS = tuple(k.value for k in CardKind)
STATUSES = tuple(s.value for s in CardStatus)


@bp.get("/cards", endpoint="cards")
@page("cards.view")
def cards_list(ctx: Ctx) -> Any:
    """Cards filtered by number prefix and status (server-side pages)."""
    limit, offset = paging()
    card_no = request.args.get("card_no", "").strip()[:32]
    status = request.args.get("status", "")
    stmt = select(Card.id)
    if card_no:
        stmt = stmt.where(Card.card_no.startswith(card_no, autoescape=True))
    if status in STATUSES:
        stmt = stmt.where(Card.status == status)
    if ctx.actor.org_unit_scope is not None:
        stmt = stmt.join(Person, Person.id == Card.person_id).where(
            Person.org_unit_id.in_(ctx.actor.org_unit_scope)
        )
    total = ctx.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    page_ids = stmt.order_by(Card.id.desc()).limit(limit).offset(offset)
    rows = ctx.session.execute(
        select(Card, Person.person_no, Person.name)
        .join(Person, Person.id == Card.person_id)
        .where(Card.id.in_(page_ids))
        .order_by(Card.id.desc())
    ).all()
    return render(
        "console/cards/list.html",
        rows=rows,
        pager=Pager(total, limit, offset),
        card_no=card_no,
        status=status,
        statuses=STATUSES,
    )


@bp.get("/cards/<int:card_id>")
@page("cards.view")
def card_detail(ctx: Ctx, card_id: int) -> Any:
    """A card: holder, status, actions, blacklist versions and which devices applied them."""
    card = lifecycle.get_card(ctx.session, card_id, actor=ctx.actor)
    person = get_person(ctx.session, card.person_id, actor=ctx.actor)
    limit, offset = paging()
    version, protection = lists.card_protection(ctx.session, card.id)
    return render(
        "console/cards/detail.html",
        card=card,
        person=person,
        history=blacklist.history(ctx.session, card.id)[-50:],
        list_version=version,
        protection=protection[offset : offset + limit],
        protected=sum(1 for p in protection if p.protected),
        devices=len(protection),
        pager=Pager(len(protection), limit, offset),
        quote=_quote(ctx, card),
    )


def _quote(ctx: Ctx, card: Card) -> lifecycle.ReturnQuote | None:
    if card.status not in ("active", "lost", "frozen") or not ctx.actor.can("cards.return"):
        return None
    return lifecycle.quote_return(ctx.session, card, now=ctx.now)


@bp.route("/people/<int:person_id>/cards/new", methods=["GET", "POST"])
@page("cards.issue")
def card_issue(ctx: Ctx, person_id: int) -> Any:
    """Issue a card to a person (a deposit is taken in cash)."""
    person = get_person(ctx.session, person_id, actor=ctx.actor)
    errors = FormErrors()
    values = {"kind": "cpu", "deposit": "0.00"}
    if request.method == "POST":
        values = form_values("card_no", "kind", "uid", "deposit")
        deposit = parse_yuan(values["deposit"] or "0", "deposit", errors, positive=False)
        if deposit is not None and not errors:
            spec = lifecycle.NewCard(
                card_no=values["card_no"],
                kind=values["kind"],
                uid=values["uid"].upper() or None,
                deposit_fen=deposit,
            )
            try:
                card = lifecycle.issue_card(ctx.session, person, spec, actor=ctx.actor, now=ctx.now)
            except OneCardError as exc:
                ctx.session.rollback()
                errors.add_domain(exc)
            else:
                ctx.session.commit()
                flash(_("Card %(no)s issued.", no=card.card_no), "success")
                return to("console.card_detail", card_id=card.id)
    return render(
        "console/cards/issue.html", person=person, values=values, errors=errors, kinds=KINDS
    ), (422 if errors else 200)


def _card(ctx: Ctx, card_id: int) -> Card:
    return lifecycle.get_card(ctx.session, card_id, actor=ctx.actor)


def _done(card: Card, message: str) -> Any:
    flash(message, "success")
    return to("console.card_detail", card_id=card.id)


def _refused(card: Card, exc: OneCardError) -> Any:
    flash(localise(exc.message), "error")
    return to("console.card_detail", card_id=card.id)


@bp.post("/cards/<int:card_id>/report-loss")
@page("cards.report_loss")
def card_report_loss(ctx: Ctx, card_id: int) -> Any:
    """挂失: devices start refusing the card."""
    card = _card(ctx, card_id)
    if not confirmed():
        return confirm_page(
            _("Report card %(no)s lost", no=card.card_no),
            _("Every device will refuse this card once it has the new blacklist."),
        )
    try:
        lifecycle.report_loss(ctx.session, card, actor=ctx.actor, now=ctx.now)
    except OneCardError as exc:
        return _refused(card, exc)
    return _done(card, _("Card reported lost."))


@bp.post("/cards/<int:card_id>/freeze")
@page("cards.freeze")
def card_freeze(ctx: Ctx, card_id: int) -> Any:
    """冻结: stop the card (with a reason)."""
    card = _card(ctx, card_id)
    reason = request.form.get("reason", "").strip()[:20]
    if not confirmed():
        return confirm_page(
            _("Freeze card %(no)s", no=card.card_no),
            _("Every device will refuse this card until it is unfrozen (with approval)."),
            [(_("Reason"), reason)],
        )
    try:
        lifecycle.freeze(ctx.session, card, actor=ctx.actor, now=ctx.now, reason=reason)
    except OneCardError as exc:
        return _refused(card, exc)
    return _done(card, _("Card frozen."))


@bp.post("/cards/<int:card_id>/unfreeze")
@page("cards.unfreeze")
def card_unfreeze(ctx: Ctx, card_id: int) -> Any:
    """解挂: ask a second operator to accept the card again."""
    card = _card(ctx, card_id)
    if not confirmed():
        return confirm_page(
            _("Unfreeze card %(no)s", no=card.card_no),
            _("A second operator must approve before devices accept the card again."),
        )
    outcome = approvals.submit(
        ctx.session,
        ctx.tenant,
        "card.unfreeze",
        {"card_id": card.id},
        actor=ctx.actor,
        now=ctx.now,
        summary=f"unfreeze card {card.card_no}",
    )
    assert outcome.approval is not None
    return _done(card, _("Unfreeze requested (approval #%(id)s).", id=outcome.approval.id))


@bp.post("/cards/<int:card_id>/replace")
@page("cards.replace")
def card_replace(ctx: Ctx, card_id: int) -> Any:
    """补卡: a new card for the same holder; the old one is blacklisted."""
    card = _card(ctx, card_id)
    new_no = request.form.get("new_card_no", "").strip()
    uid = request.form.get("uid", "").strip().upper() or None
    if not confirmed():
        return confirm_page(
            _("Replace card %(no)s", no=card.card_no),
            _("The old card stops working; deposit and balances move to the new card."),
            [(_("New card number"), new_no)],
        )
    try:
        new = lifecycle.replace(ctx.session, card, new_no, actor=ctx.actor, now=ctx.now, uid=uid)
    except OneCardError as exc:
        return _refused(card, exc)
    flash(_("Card %(no)s issued as a replacement.", no=new.card_no), "success")
    return to("console.card_detail", card_id=new.id)


@bp.post("/cards/<int:card_id>/return")
@page("cards.return")
def card_return(ctx: Ctx, card_id: int) -> Any:
    """退卡: take the card back and pay out deposit and (last card) purse balance."""
    card = _card(ctx, card_id)
    quote = lifecycle.quote_return(ctx.session, card, now=ctx.now)
    if not confirmed():
        from onecard.web.console.i18n import yuan

        return confirm_page(
            _("Return card %(no)s", no=card.card_no),
            _("The card stops working and the holder is paid in cash."),
            [
                (_("Deposit"), yuan(quote.deposit_fen)),
                (_("Purse balance"), yuan(quote.purse_fen)),
                (_("Subsidy reclaimed"), yuan(quote.subsidy_fen)),
                (_("Cash to pay"), yuan(quote.cash_fen)),
            ],
        )
    outcome = approvals.submit(
        ctx.session,
        ctx.tenant,
        "card.return",
        {"card_id": card.id},
        actor=ctx.actor,
        now=ctx.now,
        amount_fen=quote.cash_fen,
        summary=f"return card {card.card_no}, pay {quote.cash_fen} fen",
    )
    if outcome.pending:
        assert outcome.approval is not None
        return _done(card, _("Return filed for approval (#%(id)s).", id=outcome.approval.id))
    return to("console.card_receipt", card_id=card.id)


@bp.get("/cards/<int:card_id>/receipt")
@page("cards.view")
def card_receipt(ctx: Ctx, card_id: int) -> Any:
    """A printable receipt of the card's last transaction with the card centre."""
    card = _card(ctx, card_id)
    person = get_person(ctx.session, card.person_id, actor=ctx.actor)
    event = ctx.session.scalar(
        select(AuditEvent)
        .where(AuditEvent.object_type == "card", AuditEvent.object_id == str(card.id))
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    )
    keys = [f"card:{card.id}:{k}" for k in ("deposit", "return:deposit", "return:purse")]
    entries = ctx.session.execute(
        select(Entry.idempotency_key, Entry.recorded_at, func.sum(Line.amount_fen))
        .join(Line, Line.entry_id == Entry.id)
        .where(Entry.idempotency_key.in_(keys), Line.amount_fen > 0)
        .group_by(Entry.idempotency_key, Entry.recorded_at)
    ).all()
    money = {key.removeprefix(f"card:{card.id}:"): amt for key, _at, amt in entries}
    return render("console/cards/receipt.html", card=card, person=person, event=event, money=money)
