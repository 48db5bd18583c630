"""Console test helpers: operators logged in through the console's own login form."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from onecard.platform.actors import Actor
from onecard.platform.authz.services import create_operator
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.tenants.models import Tenant
from onecard.platform.tenants.services import create_tenant
from onecard.testing.fixtures import unique

PASSWORD = "long-enough-password-1"


@dataclass
class ConsoleUser:
    """A browser session of one operator: ``get``/``post`` (the CSRF token is added)."""

    client: FlaskClient
    tenant: Tenant
    username: str
    password: str = PASSWORD

    def csrf(self) -> str:
        """The session's CSRF token (a GET of the login page creates one)."""
        with self.client.session_transaction() as s:
            token = s.get("csrf")
        if not token:
            self.client.get("/console/login")
            with self.client.session_transaction() as s:
                token = s.get("csrf")
        return str(token)

    def get(self, url: str, **kw: Any) -> TestResponse:
        """GET a console page."""
        return self.client.get(url, **kw)

    def post(self, url: str, data: dict[str, Any] | None = None, **kw: Any) -> TestResponse:
        """POST a console form with the CSRF token."""
        return self.client.post(url, data={"csrf_token": self.csrf(), **(data or {})}, **kw)

    def login(self, totp: str | None = None) -> TestResponse:
        """Log in through the form."""
        form = {"tenant": self.tenant.slug, "username": self.username, "password": self.password}
        if totp:
            form["totp"] = totp
        return self.post("/console/login", form)


@pytest.fixture
def make_console_user(
    app: Flask, session_factory: sessionmaker[Session], now: datetime
) -> Callable[..., ConsoleUser]:
    """Factory: an operator with ``roles`` (in ``tenant`` or a new one), logged in."""

    def _make(
        tenant: Tenant | None = None,
        roles: tuple[str, ...] = ("tenant_admin",),
        scope: dict[str, list[int]] | None = None,
        login: bool = True,
    ) -> ConsoleUser:
        name = unique("op")
        with session_factory() as s:
            t = tenant or create_tenant(
                s, unique("t"), "控制台测试租户", actor=Actor.system("tests"), now=now
            )
            with tenant_scope(t.id):
                create_operator(
                    s,
                    name,
                    PASSWORD,
                    actor=Actor.system("tests"),
                    now=now,
                    policy=app.extensions["onecard"].policy,
                    roles=list(roles),
                    scope=scope,
                )
            s.commit()
        user = ConsoleUser(app.test_client(), t, name)
        if login:
            resp = user.login()
            assert resp.status_code == 303, resp.get_data(as_text=True)
        return user

    return _make


@pytest.fixture
def admin(make_console_user: Callable[..., ConsoleUser]) -> ConsoleUser:
    """A tenant administrator of a fresh tenant, logged in to the console."""
    return make_console_user()


@pytest.fixture
def colleague_admin(admin: ConsoleUser, make_console_user: Callable[..., ConsoleUser]) -> Any:
    """A second administrator of ``admin``'s tenant (the four-eyes partner)."""
    return make_console_user(tenant=admin.tenant)


@pytest.fixture
def person_via_console() -> Callable[..., int]:
    """Factory: ``person_via_console(user, **fields)`` creates a person, returns the id."""

    def _make(user: ConsoleUser, **fields: Any) -> int:
        form = {"person_no": unique("P"), "name": "张三", "identity_class": "staff", **fields}
        resp = user.post("/console/people/new", form)
        assert resp.status_code == 303, resp.get_data(as_text=True)
        return int(resp.headers["Location"].rstrip("/").rsplit("/", 1)[-1])

    return _make


@pytest.fixture
def card_via_console() -> Callable[..., int]:
    """Factory: ``card_via_console(user, person_id, **fields)`` issues a card, returns its id."""

    def _make(user: ConsoleUser, person_id: int, **fields: Any) -> int:
        form = {"card_no": unique("C"), "kind": "cpu", "deposit": "0", **fields}
        resp = user.post(f"/console/people/{person_id}/cards/new", form)
        assert resp.status_code == 303, resp.get_data(as_text=True)
        return int(resp.headers["Location"].rstrip("/").rsplit("/", 1)[-1])

    return _make
