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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from onecard.config import DatabaseSettings, SecuritySettings, Settings
from onecard.platform.actors import Actor
from onecard.platform.authz.services import create_operator
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
from onecard.web import create_app

FIXED_NOW = datetime(2026, 9, 1, 8, 30, tzinfo=UTC)
_serial = itertools.count(1)


def unique(prefix: str) -> str:
    """A name no other test in this session uses (``prefix`` + process id + counter)."""
    return f"{prefix}{os.getpid() % 10000}x{next(_serial)}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail ``postgres_only`` tests loudly when the suite runs without PostgreSQL."""
    if item.get_closest_marker("postgres_only") is None:
        return
    if not os.environ.get("ONECARD_TEST_DATABASE_URL", "").startswith("postgresql"):
        pytest.fail(
            "this test needs PostgreSQL: set ONECARD_TEST_DATABASE_URL (make test does)",
            pytrace=False,
        )


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
def make_person(session: Session, system_actor: Actor, now: datetime) -> Callable[..., Person]:
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


@pytest.fixture(scope="session")
def app_settings(database_url: str) -> Settings:
    """Settings of the web app under test (the test database, a fixed secret)."""
    return Settings(
        database=DatabaseSettings(url=database_url),
        security=SecuritySettings(secret_key="test-secret-key-0123456789abcdef"),
    )


@pytest.fixture(scope="session")
def app(app_settings: Settings, engine: Engine) -> Flask:
    """The Flask app on the test database (shared engine; registry with installed modules)."""
    return create_app(app_settings, engine=engine)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A Flask test client."""
    return app.test_client()


@dataclass
class ApiUser:
    """A logged-in operator for API tests: ``get``/``post``/... send the bearer token."""

    client: FlaskClient
    token: str
    tenant: Tenant
    username: str
    password: str

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def get(self, url: str, **kw: Any) -> TestResponse:
        """GET with the token."""
        return self.client.get(url, headers=self._headers(kw.pop("headers", None)), **kw)

    def post(self, url: str, **kw: Any) -> TestResponse:
        """POST with the token."""
        return self.client.post(url, headers=self._headers(kw.pop("headers", None)), **kw)

    def patch(self, url: str, **kw: Any) -> TestResponse:
        """PATCH with the token."""
        return self.client.patch(url, headers=self._headers(kw.pop("headers", None)), **kw)

    def put(self, url: str, **kw: Any) -> TestResponse:
        """PUT with the token."""
        return self.client.put(url, headers=self._headers(kw.pop("headers", None)), **kw)

    def delete(self, url: str, **kw: Any) -> TestResponse:
        """DELETE with the token."""
        return self.client.delete(url, headers=self._headers(kw.pop("headers", None)), **kw)


@pytest.fixture
def make_api_user(
    client: FlaskClient, session_factory: sessionmaker[Session], app: Flask, now: datetime
) -> Callable[..., ApiUser]:
    """Factory: an operator with ``roles`` in ``tenant`` (a new tenant by default), logged in."""

    def _make(
        tenant: Tenant | None = None,
        roles: tuple[str, ...] = ("tenant_admin",),
        scope: dict[str, list[int]] | None = None,
        username: str | None = None,
    ) -> ApiUser:
        st = app.extensions["onecard"]
        name, password = username or unique("op"), "long-enough-password-1"
        with session_factory() as s:
            t = tenant or create_tenant(
                s, unique("t"), "API tenant", actor=Actor.system("tests"), now=now
            )
            with tenant_scope(t.id):
                create_operator(
                    s,
                    name,
                    password,
                    actor=Actor.system("tests"),
                    now=now,
                    policy=st.policy,
                    roles=list(roles),
                    scope=scope,
                )
            s.commit()
        resp = client.post(
            "/api/v1/auth/login", json={"tenant": t.slug, "username": name, "password": password}
        )
        assert resp.status_code == 200, resp.get_json()
        return ApiUser(client, resp.get_json()["token"], t, name, password)

    return _make


@pytest.fixture
def api(make_api_user: Callable[..., ApiUser]) -> ApiUser:
    """A tenant administrator of a fresh tenant, logged in."""
    return make_api_user()
