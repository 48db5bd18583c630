"""People: create, read within scope, change, search, soft-delete.

Every read goes through :func:`get_person`, which answers :class:`NotFound` for ids of another
tenant (the tenant filter hides them), of deleted people, and of people outside the actor's
data scope: from the outside, all three look the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import CompoundSelect, Select, func, select, union
from sqlalchemy.orm import Session

from onecard.platform.actors import Actor
from onecard.platform.audit.record import record
from onecard.platform.cards.models import Card
from onecard.platform.db.tenancy import get_scoped
from onecard.platform.errors import Conflict, NotFound, PermissionDenied
from onecard.platform.people.models import Person
from onecard.platform.people.schemas import PersonCreate, PersonUpdate
from onecard.platform.tenants.models import OrgUnit

MAX_PAGE = 200


def resolve_org_unit(session: Session, unit_id: int | None, code: str | None) -> int | None:
    """The org-unit id named by id or code in the tenant in scope, or ``None``."""
    if unit_id is not None:
        if get_scoped(session, OrgUnit, unit_id) is None:
            raise NotFound(f"org unit {unit_id} not found", field="org_unit_id")
        return unit_id
    if code:
        found = session.scalar(select(OrgUnit.id).where(OrgUnit.code == code))
        if found is None:
            raise NotFound(f"org unit {code} not found", field="org_unit_code")
        return found
    return None


def create_person(session: Session, data: PersonCreate, *, actor: Actor, now: datetime) -> Person:
    """Add a person to the tenant in scope; ``person_no`` must be new."""
    actor.ensure("people.edit")
    unit_id = resolve_org_unit(session, data.org_unit_id, data.org_unit_code)
    _ensure_in_scope(actor, unit_id)
    if session.scalar(select(Person.id).where(Person.person_no == data.person_no)) is not None:
        raise Conflict(f"person number {data.person_no} already exists", field="person_no")
    person = Person(
        person_no=data.person_no,
        name=data.name,
        identity_class=data.identity_class,
        org_unit_id=unit_id,
        phone=data.phone,
        email=data.email,
        valid_from=data.valid_from,
        valid_until=data.valid_until,
        created_at=now,
        updated_at=now,
    )
    session.add(person)
    session.flush()
    record(
        session,
        "person.created",
        actor=actor,
        now=now,
        object_type="person",
        object_id=person.id,
        data={"person_no": person.person_no},
    )
    return person


def _ensure_in_scope(actor: Actor, org_unit_id: int | None) -> None:
    if not actor.sees_org_unit(org_unit_id):
        raise PermissionDenied("org unit is outside your data scope", field="org_unit_id")


def get_person(session: Session, person_id: int, *, actor: Actor) -> Person:
    """The live person ``person_id`` visible to ``actor``; :class:`NotFound` otherwise."""
    actor.ensure("people.view")
    person = get_scoped(session, Person, person_id)
    if (
        person is None
        or person.deleted_at is not None
        or not actor.sees_org_unit(person.org_unit_id)
    ):
        raise NotFound(f"person {person_id} not found")
    return person


def update_person(
    session: Session, person: Person, changes: PersonUpdate, *, actor: Actor, now: datetime
) -> Person:
    """Apply the fields set in ``changes``; the audit event lists what changed."""
    actor.ensure("people.edit")
    fields = changes.model_dump(exclude_unset=True)
    if "org_unit_id" in fields:
        resolve_org_unit(session, fields["org_unit_id"], None)
        _ensure_in_scope(actor, fields["org_unit_id"])
    start = fields.get("valid_from", person.valid_from)
    end = fields.get("valid_until", person.valid_until)
    if start and end and end < start:
        from onecard.platform.errors import ValidationFailed

        raise ValidationFailed("valid_until is before valid_from", field="valid_until")
    before = {k: _plain(getattr(person, k)) for k in fields}
    for key, value in fields.items():
        setattr(person, key, value)
    person.updated_at = now
    record(
        session,
        "person.updated",
        actor=actor,
        now=now,
        object_type="person",
        object_id=person.id,
        data={"before": before, "after": {k: _plain(v) for k, v in fields.items()}},
    )
    return person


def _plain(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else value


COUNT_CAP = 10_000


@dataclass(frozen=True)
class Page:
    """One page of results. ``total`` counts at most :data:`COUNT_CAP` matches.

    Counting every row of a broad search over a million people costs more than the page
    itself; past the cap ``total_capped`` is true and consoles show "10,000+".
    """

    items: list[Person]
    total: int
    limit: int
    offset: int
    total_capped: bool = False


def search_people(
    session: Session,
    *,
    actor: Actor,
    q: str | None = None,
    org_unit_id: int | None = None,
    identity_class: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page:
    """Live people matching ``q`` (person-number or name prefix, or exact card number).

    Ordered by person number. The matching is done on ``(id, person_no)`` pairs, which the
    PostgreSQL prefix indexes carry, so counting and picking the page need no table rows; only
    the page's own people are then loaded.
    """
    actor.ensure("people.view")
    limit, offset = max(1, min(limit, MAX_PAGE)), max(0, offset)
    matches = _matches(actor, q, org_unit_id, identity_class).subquery()
    counted = (
        session.scalar(
            select(func.count()).select_from(select(matches.c.id).limit(COUNT_CAP + 1).subquery())
        )
        or 0
    )
    page_ids = select(matches.c.id).order_by(matches.c.person_no).limit(limit).offset(offset)
    items = list(
        session.scalars(select(Person).where(Person.id.in_(page_ids)).order_by(Person.person_no))
    )
    return Page(items, min(counted, COUNT_CAP), limit, offset, counted > COUNT_CAP)


def _matches(
    actor: Actor, q: str | None, org_unit_id: int | None, identity_class: str | None
) -> Select[int, str] | CompoundSelect[int, str]:
    """``(id, person_no)`` of live people matching the filters.

    With ``q`` it is a UNION of three index-friendly lookups: one ``OR`` across person number,
    name and a card sub-select makes PostgreSQL scan the whole table, while each branch here
    uses its own index (prefix ``LIKE`` on the pattern-ops indexes, equality on card number).
    """
    q = (q or "").strip()
    if not q:
        return _filtered(select(Person.id, Person.person_no), actor, org_unit_id, identity_class)
    by_card = (
        select(Person.id, Person.person_no)
        .join(Card, Card.person_id == Person.id)
        .where(Card.card_no == q)
    )
    branches = [
        select(Person.id, Person.person_no).where(Person.person_no.startswith(q, autoescape=True)),
        select(Person.id, Person.person_no).where(Person.name.startswith(q, autoescape=True)),
        by_card,
    ]
    return union(*(_filtered(b, actor, org_unit_id, identity_class) for b in branches))


def _filtered(
    stmt: Select[int, str], actor: Actor, org_unit_id: int | None, identity_class: str | None
) -> Select[int, str]:
    stmt = stmt.where(Person.deleted_at.is_(None))
    if actor.org_unit_scope is not None:
        stmt = stmt.where(Person.org_unit_id.in_(actor.org_unit_scope))
    if org_unit_id is not None:
        stmt = stmt.where(Person.org_unit_id == org_unit_id)
    if identity_class:
        stmt = stmt.where(Person.identity_class == identity_class)
    return stmt


def mark_deleted(session: Session, person: Person, *, actor: Actor, now: datetime) -> Person:
    """Soft-delete a person and stop all their cards (called once an approval is granted)."""
    from onecard.platform.cards.lifecycle import stop_all_cards

    actor.ensure("people.delete")
    if person.deleted_at is not None:
        raise NotFound(f"person {person.id} not found")
    stop_all_cards(session, person, actor=actor, now=now)
    person.deleted_at = now
    record(
        session,
        "person.deleted",
        actor=actor,
        now=now,
        object_type="person",
        object_id=person.id,
        data={"person_no": person.person_no},
    )
    return person
