"""The pytest plugin of OneCard (``-p onecard.testing.fixtures``): databases and factories.

Database choice: ``ONECARD_TEST_DATABASE_URL`` (PostgreSQL, set by ``make test``'s second
pass) or a fresh SQLite file per test session. The schema is built by the real migrations once
per session. Tests stay independent because every test works in tenants of its own (tenant
scoping is what keeps them apart, exactly as in production).

Markers: ``postgres_only`` tests fail loudly when the database is not PostgreSQL.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from onecard.platform.actors import Actor
from onecard.platform.cards.lifecycle import NewCard, issue_card
from onecard.platform.cards.models import Card
from onecard.platform.db.engine import make_engine, make_session_factory
from onecard.platform.db.migrate import upgrade
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.people.models import Person
from onecard.platform.people.schemas import PersonCreate
from onecard.platform.people.services import create_person
from onecard.platform.tenants.models import Tenant
from onecard.platform.tenants.services import create_tenant

FIXED_NOW = datetime(2026, 9, 1, 8, 30, tzinfo=UTC)
_serial = itertools.count(1)


def unique(prefix: str) -> str:
    """A name no other test in this session uses (``prefix`` + process id + counter)."""
    return f"{prefix}{os.getpid() % 10000}x{next(_serial)}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fail ``postgres_only`` tests loudly when the suite runs without PostgreSQL."""
    url = os.environ.get("ONECARD_TEST_DATABASE_URL", "")
    if url.startswith("postgresql"):
        return
    for item in items:
        if item.get_closest_marker("postgres_only"):
            item.add_marker(pytest.mark.usefixtures("_require_postgres"))


@pytest.fixture
def _require_postgres() -> None:
    pytest.fail("this test needs PostgreSQL: set ONECARD_TEST_DATABASE_URL (make test does)")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test database URL (PostgreSQL from the environment, else a session SQLite file)."""
    url = os.environ.get("ONECARD_TEST_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'onecard.db'}"


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the migrated test database."""
    eng = make_engine(database_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Session factory bound to the test database."""
    return make_session_factory(engine)


@pytest.fixture
def is_postgres(engine: Engine) -> bool:
    """True in the PostgreSQL pass."""
    return engine.dialect.name == "postgresql"


@pytest.fixture
def now() -> datetime:
    """A fixed, aware UTC time for services (tests inject time instead of sleeping)."""
    return FIXED_NOW


@pytest.fixture
def system_actor() -> Actor:
    """An all-permission internal actor."""
    return Actor.system("tests")


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session; tests commit when they want to see what another session sees."""
    with session_factory() as s:
        yield s


@pytest.fixture
def make_tenant(
    session_factory: sessionmaker[Session], system_actor: Actor, now: datetime
) -> Callable[..., Tenant]:
    """Factory: a committed new tenant with its accounts and default roles."""

    def _make(slug: str | None = None, name: str = "Test tenant") -> Tenant:
        with session_factory() as s:
            tenant = create_tenant(s, slug or unique("t"), name, actor=system_actor, now=now)
            s.commit()
            return tenant

    return _make


@pytest.fixture
def tenant(make_tenant: Callable[..., Tenant]) -> Iterator[Tenant]:
    """A fresh tenant, in scope for the duration of the test."""
    t = make_tenant()
    with tenant_scope(t.id):
        yield t


@pytest.fixture
def make_person(
    session: Session, system_actor: Actor, now: datetime
) -> Callable[..., Person]:
    """Factory: a person in the tenant in scope (flushed, not committed)."""

    def _make(**fields: Any) -> Person:
        data = {"person_no": unique("P"), "name": "Test Person", "identity_class": "staff"}
        data.update(fields)
        return create_person(session, PersonCreate(**data), actor=system_actor, now=now)

    return _make


@pytest.fixture
def make_card(session: Session, system_actor: Actor, now: datetime) -> Callable[..., Card]:
    """Factory: an active card for a person in the tenant in scope."""

    def _make(person: Person, **fields: Any) -> Card:
        spec = NewCard(card_no=fields.pop("card_no", unique("C")), **fields)
        return issue_card(session, person, spec, actor=system_actor, now=now)

    return _make
