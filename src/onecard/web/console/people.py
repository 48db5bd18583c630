"""People pages: search (server-side pages), create, edit, photo, delete (four-eyes)."""

from __future__ import annotations

from typing import Any

from flask import Response, abort, flash, request
from flask_babel import gettext as _
from sqlalchemy import select

from onecard.platform.approvals import services as approvals
from onecard.platform.cards.models import Card
from onecard.platform.errors import OneCardError
from onecard.platform.people import services as people
from onecard.platform.people.models import IDENTITY_CLASSES
from onecard.platform.people.schemas import PersonCreate, PersonUpdate
from onecard.platform.tenants.models import OrgUnit
from onecard.web.console.core import Ctx, bp, page, render, to
from onecard.web.console.forms import (
    FormErrors,
    Pager,
    confirm_page,
    confirmed,
    form_values,
    paging,
    parse,
)

FIELDS = ("name", "identity_class", "org_unit_id", "phone", "email", "valid_from", "valid_until")
MAX_PHOTO_BYTES = 1024 * 1024


def org_units(ctx: Ctx) -> list[OrgUnit]:
    """Org units for pickers (the operator's scope only; at most 500)."""
    stmt = select(OrgUnit).order_by(OrgUnit.code).limit(500)
    if ctx.actor.org_unit_scope is not None:
        stmt = stmt.where(OrgUnit.id.in_(ctx.actor.org_unit_scope))
    return list(ctx.session.scalars(stmt))


@bp.get("/people", endpoint="people")
@page("people.view")
def people_list(ctx: Ctx) -> Any:
    """Search people by number, name prefix or card number; filter by class and org unit."""
    limit, offset = paging()
    q = request.args.get("q", "").strip()[:100]
    cls = request.args.get("identity_class", "")
    unit = request.args.get("org_unit_id", "")
    found = people.search_people(
        ctx.session,
        actor=ctx.actor,
        q=q or None,
        identity_class=cls if cls in IDENTITY_CLASSES else None,
        org_unit_id=int(unit) if unit.isdigit() else None,
        limit=limit,
        offset=offset,
    )
    pager = Pager(found.total, found.limit, found.offset, found.total_capped)
    units = {u.id: u for u in org_units(ctx)}
    return render(
        "console/people/list.html",
        people=found.items,
        pager=pager,
        q=q,
        identity_class=cls,
        org_unit_id=unit,
        units=units,
        classes=IDENTITY_CLASSES,
    )


def _values() -> dict[str, Any]:
    values: dict[str, Any] = form_values("person_no", *FIELDS)
    unit = values["org_unit_id"]
    values["org_unit_id"] = int(unit) if unit.isdigit() else (unit or None)
    return values


@bp.route("/people/new", methods=["GET", "POST"])
@page("people.edit")
def person_new(ctx: Ctx) -> Any:
    """Create a person."""
    errors, values = FormErrors(), {"identity_class": "staff"}
    if request.method == "POST":
        values = _values()
        data = parse(PersonCreate, values, errors)
        if data is not None:
            try:
                person = people.create_person(ctx.session, data, actor=ctx.actor, now=ctx.now)
            except OneCardError as exc:
                errors.add_domain(exc)
            else:
                ctx.session.commit()
                flash(_("Person %(no)s created.", no=person.person_no), "success")
                return to("console.person_detail", person_id=person.id)
    return render(
        "console/people/form.html",
        values=values,
        errors=errors,
        classes=IDENTITY_CLASSES,
        units=org_units(ctx),
        creating=True,
    ), (422 if errors else 200)


@bp.get("/people/<int:person_id>")
@page("people.view")
def person_detail(ctx: Ctx, person_id: int) -> Any:
    """A person with their cards."""
    person = people.get_person(ctx.session, person_id, actor=ctx.actor)
    cards = list(
        ctx.session.scalars(
            select(Card).where(Card.person_id == person.id).order_by(Card.id.desc()).limit(100)
        )
    )
    unit = ctx.session.get(OrgUnit, person.org_unit_id) if person.org_unit_id else None
    return render("console/people/detail.html", person=person, cards=cards, unit=unit)


@bp.route("/people/<int:person_id>/edit", methods=["GET", "POST"])
@page("people.edit")
def person_edit(ctx: Ctx, person_id: int) -> Any:
    """Change a person's details (only the fields that differ are sent to the service)."""
    person = people.get_person(ctx.session, person_id, actor=ctx.actor)
    errors = FormErrors()
    values: dict[str, Any] = {f: getattr(person, f) for f in FIELDS}
    if request.method == "POST":
        values = _values()
        changes = {k: v for k, v in values.items() if k in FIELDS and _differs(person, k, v)}
        data = parse(PersonUpdate, changes, errors) if changes else None
        if data is not None:
            try:
                people.update_person(ctx.session, person, data, actor=ctx.actor, now=ctx.now)
            except OneCardError as exc:
                errors.add_domain(exc)
        if not errors:
            ctx.session.commit()
            flash(_("Changes saved."), "success")
            return to("console.person_detail", person_id=person.id)
    return render(
        "console/people/form.html",
        person=person,
        values=values,
        errors=errors,
        classes=IDENTITY_CLASSES,
        units=org_units(ctx),
        creating=False,
    ), (422 if errors else 200)


def _differs(person: Any, key: str, value: Any) -> bool:
    current = getattr(person, key)
    current = current.isoformat() if hasattr(current, "isoformat") else current
    return (current or None) != (value or None)


@bp.post("/people/<int:person_id>/photo")
@page("people.edit")
def person_photo_upload(ctx: Ctx, person_id: int) -> Any:
    """Set the person's photo (JPEG or PNG, at most 1 MiB)."""
    person = people.get_person(ctx.session, person_id, actor=ctx.actor)
    upload = request.files.get("photo")
    data = upload.read(MAX_PHOTO_BYTES + 1) if upload else b""
    kind = _image_type(data)
    if not data or len(data) > MAX_PHOTO_BYTES or kind is None:
        flash(_("The photo must be a JPEG or PNG file of at most 1 MiB."), "error")
        return to("console.person_detail", person_id=person.id)
    person.photo, person.photo_type, person.updated_at = data, kind, ctx.now
    flash(_("Photo saved."), "success")
    return to("console.person_detail", person_id=person.id)


def _image_type(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return None


@bp.get("/people/<int:person_id>/photo")
@page("people.view")
def person_photo(ctx: Ctx, person_id: int) -> Any:
    """The person's photo."""
    person = people.get_person(ctx.session, person_id, actor=ctx.actor)
    if not person.photo:
        abort(404)
    return Response(person.photo, mimetype=person.photo_type or "application/octet-stream")


@bp.post("/people/<int:person_id>/delete")
@page("people.delete")
def person_delete(ctx: Ctx, person_id: int) -> Any:
    """Ask for a person's deletion (a second operator approves; their cards then stop)."""
    person = people.get_person(ctx.session, person_id, actor=ctx.actor)
    if not confirmed():
        return confirm_page(
            _("Delete %(name)s", name=person.name),
            _(
                "A second operator must approve. When approved, all their cards stop working "
                "and the person disappears from lists (their history stays)."
            ),
            [(_("Person number"), person.person_no)],
        )
    outcome = approvals.submit(
        ctx.session,
        ctx.tenant,
        "person.delete",
        {"person_id": person.id},
        actor=ctx.actor,
        now=ctx.now,
        summary=f"delete person {person.person_no} {person.name}",
    )
    flash(_("Deletion requested (approval #%(id)s).", id=outcome.approval.id), "success")
    return to("console.person_detail", person_id=person.id)
