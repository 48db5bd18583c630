"""Tenant isolation: inside tenant A's scope, tenant B's rows do not exist.

Both tenants get a person with a card and money; reads happen in a fresh session so that what is
tested is the database query, not objects a session still remembers (see the last test).
"""

from dataclasses import dataclass

import pytest
from sqlalchemy import func, select, update

from onecard.platform.cards.blacklist import snapshot
from onecard.platform.cards.lifecycle import NewCard, get_card, issue_card, report_loss
from onecard.platform.cards.models import Card
from onecard.platform.db.tenancy import tenant_scope, unscoped
from onecard.platform.errors import NotFound, TenantScopeMissing
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import holder_account
from onecard.platform.ledger.models import Account, Entry
from onecard.platform.ledger.reconcile import verify
from onecard.platform.people.models import Person
from onecard.platform.people.schemas import PersonCreate
from onecard.platform.people.services import create_person, get_person, search_people
from onecard.testing.fixtures import unique


@dataclass(frozen=True)
class Holding:
    """Ids of one tenant's person, card and purse."""

    tenant_id: int
    person_id: int
    person_no: str
    card_id: int
    card_no: str
    purse_id: int


@pytest.fixture
def make_holding(session_factory, make_tenant, system_actor, now):
    """Factory: a committed tenant with one person, an active card and a topped-up purse."""

    def _make() -> Holding:
        tenant = make_tenant()
        with tenant_scope(tenant.id), session_factory() as s:
            person = create_person(
                s,
                PersonCreate(person_no=unique("P"), name="Zhang San", identity_class="staff"),
                actor=system_actor,
                now=now,
            )
            card = issue_card(s, person, NewCard(card_no=unique("C")), actor=system_actor, now=now)
            ops.top_up(s, person.id, 3000, channel="cash", actor=system_actor, now=now)
            purse = holder_account(s, person.id, ops.PURSE, now=now)
            s.commit()
            return Holding(tenant.id, person.id, person.person_no, card.id, card.card_no, purse.id)

    return _make


@pytest.fixture
def a(make_holding):
    return make_holding()


@pytest.fixture
def b(make_holding):
    return make_holding()


@pytest.fixture
def in_a(a, session_factory):
    """A fresh session with tenant A in scope."""
    with tenant_scope(a.tenant_id), session_factory() as s:
        yield s


@pytest.mark.parametrize(
    ("model", "field"), [(Person, "person_id"), (Card, "card_id"), (Account, "purse_id")]
)
def test_session_get_of_another_tenants_id_finds_nothing(in_a, b, model, field):
    assert in_a.get(model, getattr(b, field)) is None


def test_select_by_another_tenants_id_finds_nothing(in_a, b):
    assert in_a.scalars(select(Person).where(Person.id == b.person_id)).all() == []


def test_get_person_of_another_tenant_is_not_found(in_a, b, system_actor):
    with pytest.raises(NotFound):
        get_person(in_a, b.person_id, actor=system_actor)


def test_get_card_of_another_tenant_is_not_found(in_a, b, system_actor):
    with pytest.raises(NotFound):
        get_card(in_a, b.card_id, actor=system_actor)


def test_search_by_another_tenants_person_number_finds_nobody(in_a, b, system_actor):
    assert search_people(in_a, actor=system_actor, q=b.person_no).total == 0


def test_search_by_another_tenants_card_number_finds_nobody(in_a, b, system_actor):
    assert search_people(in_a, actor=system_actor, q=b.card_no).total == 0


def test_search_without_a_query_lists_only_own_people(in_a, a, b, system_actor):
    page = search_people(in_a, actor=system_actor)

    assert [p.id for p in page.items] == [a.person_id]


def test_counts_through_subqueries_are_scoped(in_a, a, b):
    people = in_a.scalar(select(func.count()).select_from(select(Person).subquery()))
    holders = in_a.scalars(select(Person.id).where(Person.id.in_(select(Card.person_id)))).all()

    assert people == 1
    assert holders == [a.person_id]


def test_bulk_update_touches_only_own_rows(in_a, a, b, session_factory):
    in_a.execute(update(Person).values(name="Renamed"))
    in_a.commit()

    with tenant_scope(b.tenant_id), session_factory() as s:
        assert s.get(Person, b.person_id).name == "Zhang San"


def test_each_tenant_verifies_its_own_ledger(in_a, a, b):
    report = verify(in_a)

    assert report.ok
    assert report.entries == in_a.scalar(select(func.count(Entry.id))) == 1


def test_blacklist_of_another_tenant_is_invisible(b, in_a, session_factory, system_actor, now):
    with tenant_scope(b.tenant_id), session_factory() as s:
        report_loss(s, s.get(Card, b.card_id), actor=system_actor, now=now)
        s.commit()

    assert snapshot(in_a) == (0, [])


def test_query_with_no_tenant_in_scope_raises(a, session_factory):
    with session_factory() as s, pytest.raises(TenantScopeMissing):
        s.scalars(select(Person)).all()


def test_session_get_with_no_tenant_in_scope_raises(a, session_factory):
    with session_factory() as s, pytest.raises(TenantScopeMissing):
        s.get(Person, a.person_id)


def test_unscoped_block_sees_every_tenant(a, b, session_factory):
    with session_factory() as s, unscoped(reason="test: platform-wide count"):
        ids = set(s.scalars(select(Person.id).where(Person.id.in_([a.person_id, b.person_id]))))

    assert ids == {a.person_id, b.person_id}


def test_writing_a_row_stamped_with_another_tenant_is_refused(in_a, b, now):
    in_a.add(
        Person(
            tenant_id=b.tenant_id,
            person_no=unique("P"),
            name="Intruder",
            identity_class="staff",
            created_at=now,
            updated_at=now,
        )
    )

    with pytest.raises(TenantScopeMissing):
        in_a.flush()
    in_a.rollback()


def test_new_rows_are_stamped_with_the_tenant_in_scope(in_a, a, now):
    person = Person(
        person_no=unique("P"), name="New", identity_class="staff", created_at=now, updated_at=now
    )
    in_a.add(person)
    in_a.flush()

    assert person.tenant_id == a.tenant_id


def test_object_remembered_from_another_tenant_is_not_found(
    session, make_tenant, make_person, system_actor
):
    tenant_a, tenant_b = make_tenant(), make_tenant()
    with tenant_scope(tenant_b.id):
        stranger = make_person()
        session.commit()

    with tenant_scope(tenant_a.id), pytest.raises(NotFound):
        get_person(session, stranger.id, actor=system_actor)
