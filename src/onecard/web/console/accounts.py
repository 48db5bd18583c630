"""Account pages: a holder's balances and statement, top-up, refund (four-eyes above the
threshold), and subsidy batches with a preview before anything is posted."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from flask import flash, request
from flask_babel import gettext as _
from sqlalchemy import func, select

from onecard.platform.approvals import services as approvals
from onecard.platform.errors import OneCardError
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import balance_of, holder_accounts
from onecard.platform.ledger.models import Entry, Line
from onecard.platform.people import services as people
from onecard.platform.people.models import Person
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

MAX_BATCH_LINES = 20000
BATCH_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,40}$")


@bp.get("/accounts", endpoint="accounts")
@page("accounts.view")
def accounts_index(ctx: Ctx) -> Any:
    """Find a holder (number, name prefix or card number) to see their accounts."""
    limit, offset = paging()
    q = request.args.get("q", "").strip()[:100]
    found = (
        people.search_people(ctx.session, actor=ctx.actor, q=q, limit=limit, offset=offset)
        if q
        else None
    )
    pager = Pager(found.total, found.limit, found.offset, found.total_capped) if found else None
    return render("console/accounts/index.html", q=q, found=found, pager=pager)


@bp.get("/accounts/person/<int:person_id>")
@page("accounts.view")
def holder(ctx: Ctx, person_id: int) -> Any:
    """A holder's purses with balances and the statement of one of them (newest first)."""
    person = people.get_person(ctx.session, person_id, actor=ctx.actor)
    accounts = holder_accounts(ctx.session, person.id, now=ctx.now)
    kind = request.args.get("kind", ops.PURSE)
    account = accounts.get(kind) or accounts[ops.PURSE]
    limit, offset = paging()
    total = ctx.session.scalar(select(func.count(Line.id)).where(Line.account_id == account.id))
    lines = ctx.session.execute(
        select(Line.amount_fen, Entry)
        .join(Entry, Entry.id == Line.entry_id)
        .where(Line.account_id == account.id)
        .order_by(Line.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return render(
        "console/accounts/holder.html",
        person=person,
        accounts=accounts,
        balances={k: balance_of(ctx.session, a) for k, a in accounts.items()},
        account=account,
        lines=[(amount * account.sign, entry) for amount, entry in lines],
        pager=Pager(total or 0, limit, offset),
        errors=FormErrors(),
        values={"channel": "cash"},
    )


def _holder_page(ctx: Ctx, person: Person, errors: FormErrors, values: dict[str, str]) -> Any:
    accounts = holder_accounts(ctx.session, person.id, now=ctx.now)
    account = accounts[ops.PURSE]
    return render(
        "console/accounts/holder.html",
        person=person,
        accounts=accounts,
        balances={k: balance_of(ctx.session, a) for k, a in accounts.items()},
        account=account,
        lines=[],
        pager=Pager(0, 50, 0),
        errors=errors,
        values=values,
    ), 422


@bp.post("/accounts/person/<int:person_id>/top-up")
@page("accounts.top_up")
def top_up(ctx: Ctx, person_id: int) -> Any:
    """Top up the purse in cash or by bank (with the bank's reference)."""
    person = people.get_person(ctx.session, person_id, actor=ctx.actor)
    values = form_values("amount", "channel", "bank_reference", "request_id")
    errors = FormErrors()
    amount = parse_yuan(values["amount"], "amount", errors)
    if amount is None:
        return _holder_page(ctx, person, errors, values)
    try:
        ops.top_up(
            ctx.session,
            person.id,
            amount,
            channel=values["channel"] or "cash",
            bank_reference=values["bank_reference"] or None,
            actor=ctx.actor,
            now=ctx.now,
            idempotency_key=_key(values["request_id"]),
        )
    except OneCardError as exc:
        ctx.session.rollback()
        errors.add_domain(exc)
        return _holder_page(ctx, person, errors, values)
    flash(_("Top-up of %(amount)s recorded.", amount=values["amount"]), "success")
    return to("console.holder", person_id=person.id)


def _key(request_id: str) -> str | None:
    """The form's one-time request id makes a double-submitted form post once."""
    return f"console:{request_id}" if re.fullmatch(r"[A-Za-z0-9_-]{8,64}", request_id) else None


@bp.post("/accounts/person/<int:person_id>/refund")
@page("accounts.refund")
def refund(ctx: Ctx, person_id: int) -> Any:
    """Pay purse money back in cash; above the tenant's threshold a second operator approves."""
    person = people.get_person(ctx.session, person_id, actor=ctx.actor)
    values = form_values("refund_amount", "memo", "request_id")
    errors = FormErrors()
    amount = parse_yuan(values["refund_amount"], "refund_amount", errors)
    if amount is None:
        return _holder_page(ctx, person, errors, values)
    if not confirmed():
        return confirm_page(
            _("Refund %(amount)s to %(name)s", amount=values["refund_amount"], name=person.name),
            _("Cash leaves the cash desk. Large refunds wait for a second operator."),
            [(_("Memo"), values["memo"])],
        )
    key = _key(values["request_id"]) or ops.new_key()
    try:
        outcome = approvals.submit(
            ctx.session,
            ctx.tenant,
            "refund",
            {
                "person_id": person.id,
                "amount_fen": amount,
                "memo": values["memo"][:200],
                "idempotency_key": key,
            },
            actor=ctx.actor,
            now=ctx.now,
            amount_fen=amount,
            idempotency_key=f"approval:{key}",
            summary=f"refund {amount} fen to {person.person_no} {person.name}",
        )
    except OneCardError as exc:
        ctx.session.rollback()
        errors.add_domain(exc, "refund_amount")
        return _holder_page(ctx, person, errors, values)
    if outcome.pending:
        assert outcome.approval is not None
        flash(_("Refund waits for approval (#%(id)s).", id=outcome.approval.id), "success")
    else:
        flash(_("Refund paid."), "success")
    return to("console.holder", person_id=person.id)


def parse_batch(ctx: Ctx, text: str, errors: list[tuple[int, str]]) -> list[tuple[Person, int]]:
    """Lines ``person_no,amount`` → people and fen; problems are listed per line."""
    numbers: list[tuple[int, str, str]] = []
    for n, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            errors.append((n, _("expected: person number, amount")))
            continue
        numbers.append((n, row[0].strip(), row[1].strip()))
        if len(numbers) > MAX_BATCH_LINES:
            errors.append((n, _("at most %(n)s lines", n=MAX_BATCH_LINES)))
            return []
    found = _people_by_number(ctx, [no for _n, no, _a in numbers])
    out: list[tuple[Person, int]] = []
    for n, no, amount_text in numbers:
        fe = FormErrors()
        amount = parse_yuan(amount_text, "amount", fe)
        person = found.get(no)
        if person is None:
            errors.append((n, _("unknown person %(no)s", no=no)))
        elif amount is None:
            errors.append((n, fe["amount"]))
        else:
            out.append((person, amount))
    return out


def _people_by_number(ctx: Ctx, numbers: list[str]) -> dict[str, Person]:
    found: dict[str, Person] = {}
    for start in range(0, len(numbers), 1000):
        chunk = numbers[start : start + 1000]
        stmt = select(Person).where(Person.person_no.in_(chunk), Person.deleted_at.is_(None))
        for person in ctx.session.scalars(stmt):
            if ctx.actor.sees_org_unit(person.org_unit_id):
                found[person.person_no] = person
    return found


@bp.route("/accounts/subsidies", methods=["GET", "POST"])
@page("accounts.subsidy")
def subsidy_batch(ctx: Ctx) -> Any:
    """Subsidy batch: paste or upload ``person number,amount`` lines, preview, then post."""
    values = form_values("batch_id", "memo", "lines")
    upload = request.files.get("file")
    if upload and upload.filename:
        values["lines"] = upload.read(5 * 1024 * 1024).decode("utf-8-sig", errors="replace")
    problems: list[tuple[int, str]] = []
    lines: list[tuple[Person, int]] = []
    errors = FormErrors()
    if request.method == "POST":
        if not BATCH_ID_RE.match(values["batch_id"]):
            errors["batch_id"] = _("1-40 letters, digits or . _ : -")
        lines = parse_batch(ctx, values["lines"], problems)
        if not lines and not problems:
            errors["lines"] = _("no lines")
        if not errors and not problems and confirmed():
            return _post_batch(ctx, values, lines)
    total = sum(a for _p, a in lines)
    return render(
        "console/accounts/subsidies.html",
        values=values,
        errors=errors,
        problems=problems[:500],
        problem_count=len(problems),
        preview=lines[:200],
        count=len(lines),
        total=total,
        ready=request.method == "POST" and not errors and not problems and bool(lines),
    ), (422 if errors or problems else 200)


def _post_batch(ctx: Ctx, values: dict[str, str], lines: list[tuple[Person, int]]) -> Any:
    entries = ops.grant_subsidy_batch(
        ctx.session,
        values["batch_id"],
        [ops.SubsidyLine(p.id, amount) for p, amount in lines],
        actor=ctx.actor,
        now=ctx.now,
        memo=values["memo"][:200],
    )
    flash(
        _("Subsidy batch %(id)s posted for %(n)s people.", id=values["batch_id"], n=len(entries)),
        "success",
    )
    return to("console.subsidy_batch")
