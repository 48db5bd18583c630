"""Logging in and out, lockout, TOTP, per-address throttling, platform administration, menu."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from onecard.config import Settings
from onecard.platform.actors import Actor
from onecard.platform.authz.services import create_operator
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.tenants.services import ensure_platform_tenant
from onecard.testing.fixtures import ApiUser, unique
from onecard.web import create_app
from onecard.web.throttle import FailureThrottle

LOGIN = "/api/v1/auth/login"


@pytest.fixture(autouse=True)
def _fresh_throttle(app: Flask) -> Iterator[None]:
    """Failed logins here must not throttle the rest of the session's tests (one address)."""
    app.extensions["onecard"].throttle = FailureThrottle()
    yield
    app.extensions["onecard"].throttle = FailureThrottle()


def _login(client: FlaskClient, user: ApiUser, password: str | None = None, **extra: Any) -> Any:
    body = {
        "tenant": user.tenant.slug,
        "username": user.username,
        "password": user.password if password is None else password,
        **extra,
    }
    return client.post(LOGIN, json=body)


def test_login_returns_a_bearer_token(client: FlaskClient, api: ApiUser) -> None:
    resp = _login(client, api)
    assert resp.status_code == 200
    body = resp.get_json()
    assert (body["token_type"], body["tenant"]) == ("Bearer", api.tenant.slug)
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.get_json()["username"] == api.username


@pytest.mark.parametrize(
    "change",
    [{"password": "wrong-password-123"}, {"username": "nobody"}, {"tenant": "no-such-tenant"}],
    ids=["wrong password", "unknown operator", "unknown tenant"],
)
def test_wrong_credentials_are_a_401_problem_that_does_not_say_which(
    client: FlaskClient, api: ApiUser, expect_problem: Callable[..., Any], change: dict[str, str]
) -> None:
    body = {"tenant": api.tenant.slug, "username": api.username, "password": api.password}
    problem = expect_problem(client.post(LOGIN, json={**body, **change}), 401)
    assert problem["detail"] == "invalid credentials"


def test_five_failures_lock_the_operator_out_even_with_the_right_password(
    client: FlaskClient, api: ApiUser, expect_problem: Callable[..., Any]
) -> None:
    for _ in range(5):
        expect_problem(_login(client, api, "wrong-password-123"), 401)
    problem = expect_problem(_login(client, api), 401)
    assert "locked" in problem["detail"]


def test_four_failures_then_success_resets_the_count(client: FlaskClient, api: ApiUser) -> None:
    for _ in range(4):
        _login(client, api, "wrong-password-123")
    assert _login(client, api).status_code == 200
    for _ in range(4):
        _login(client, api, "wrong-password-123")
    assert _login(client, api).status_code == 200


@pytest.fixture
def totp(api: ApiUser) -> pyotp.TOTP:
    """``api`` has switched on TOTP; the authenticator app's view of the seed."""
    resp = api.post("/api/v1/auth/totp")
    assert resp.status_code == 201
    uri = resp.get_json()["provisioning_uri"]
    assert uri.startswith("otpauth://totp/")
    return pyotp.parse_uri(uri)  # type: ignore[return-value]


def test_with_totp_on_a_login_without_code_is_refused(
    client: FlaskClient, api: ApiUser, totp: pyotp.TOTP, expect_problem: Callable[..., Any]
) -> None:
    problem = expect_problem(_login(client, api), 401)
    assert problem["detail"] == "second factor required"


def test_with_totp_on_the_current_code_logs_in_once(
    client: FlaskClient, api: ApiUser, totp: pyotp.TOTP, expect_problem: Callable[..., Any]
) -> None:
    code = totp.now()
    assert _login(client, api, totp=code).status_code == 200
    problem = expect_problem(_login(client, api, totp=code), 401)  # replayed code
    assert problem["detail"] == "invalid second factor"


def test_with_totp_on_a_wrong_code_is_refused(
    client: FlaskClient, api: ApiUser, totp: pyotp.TOTP, expect_problem: Callable[..., Any]
) -> None:
    wrong = f"{(int(totp.now()) + 500000) % 1000000:06d}"
    expect_problem(_login(client, api, totp=wrong), 401)


def test_logout_revokes_the_token(api: ApiUser, expect_problem: Callable[..., Any]) -> None:
    assert api.get("/api/v1/auth/me").status_code == 200
    assert api.post("/api/v1/auth/logout").status_code == 204
    expect_problem(api.get("/api/v1/auth/me"), 401)


def test_logout_leaves_other_tokens_working(client: FlaskClient, api: ApiUser) -> None:
    other = _login(client, api).get_json()["token"]
    api.post("/api/v1/auth/logout")
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {other}"})
    assert me.status_code == 200


def test_me_describes_the_operator(make_api_user: Callable[..., ApiUser]) -> None:
    auditor = make_api_user(roles=("auditor",))
    me = auditor.get("/api/v1/auth/me").get_json()
    assert (me["username"], me["tenant"], me["is_platform_admin"]) == (
        auditor.username,
        auditor.tenant.slug,
        False,
    )
    assert "audit.view" in me["permissions"]
    assert "people.edit" not in me["permissions"]
    assert me["org_unit_scope"] is None


# --- per-address throttle (a separate app, so nothing else is throttled) ----------------------


@pytest.fixture
def lonely_app(app_settings: Settings, engine: Engine) -> Flask:
    """A second app on the same database, with a throttle of its own."""
    return create_app(app_settings, engine=engine)


def test_twenty_failures_from_one_address_throttle_it_with_429(
    lonely_app: Flask, api: ApiUser, expect_problem: Callable[..., Any]
) -> None:
    client = lonely_app.test_client()
    for n in range(20):
        body = {"tenant": api.tenant.slug, "username": f"spray{n}", "password": "guess-123456"}
        expect_problem(client.post(LOGIN, json=body), 401)
    expect_problem(_login(client, api), 429)
    other = lonely_app.test_client()
    other_ip = other.post(
        LOGIN,
        json={"tenant": api.tenant.slug, "username": api.username, "password": api.password},
        environ_base={"REMOTE_ADDR": "10.0.0.9"},
    )
    assert other_ip.status_code == 200


# --- platform administration ------------------------------------------------------------------


@pytest.fixture
def platform_admin(
    client: FlaskClient, session_factory: sessionmaker[Session], app: Flask, now: datetime
) -> ApiUser:
    """A platform administrator (in the ``_platform`` pseudo-tenant), logged in."""
    username, password = unique("root"), "platform-password-1"
    with session_factory() as s:
        platform = ensure_platform_tenant(s, now=now)
        with tenant_scope(platform.id):
            create_operator(
                s,
                username,
                password,
                actor=Actor.system("tests"),
                now=now,
                policy=app.extensions["onecard"].policy,
                is_platform_admin=True,
            )
        s.commit()
    resp = client.post(
        LOGIN, json={"tenant": "_platform", "username": username, "password": password}
    )
    assert resp.status_code == 200, resp.get_json()
    return ApiUser(client, resp.get_json()["token"], platform, username, password)


def _new_tenant_body() -> dict[str, str]:
    return {
        "slug": unique("acme"),
        "name": "Acme 大学",
        "admin_username": "boss",
        "admin_password": "boss-password-1",
    }


def test_platform_admin_creates_a_tenant_whose_admin_can_log_in(
    client: FlaskClient, platform_admin: ApiUser
) -> None:
    body = _new_tenant_body()
    resp = platform_admin.post("/api/v1/tenants", json=body)
    assert resp.status_code == 201, resp.get_json()
    login = client.post(
        LOGIN, json={"tenant": body["slug"], "username": "boss", "password": "boss-password-1"}
    )
    assert login.status_code == 200


def test_tenant_admin_cannot_create_tenants(
    api: ApiUser, client: FlaskClient, expect_problem: Callable[..., Any]
) -> None:
    body = _new_tenant_body()
    expect_problem(api.post("/api/v1/tenants", json=body), 403)
    expect_problem(
        client.post(
            LOGIN, json={"tenant": body["slug"], "username": "boss", "password": "boss-password-1"}
        ),
        401,
    )


def test_platform_admin_lists_every_tenant_and_a_tenant_admin_only_their_own(
    api: ApiUser, platform_admin: ApiUser, make_api_user: Callable[..., ApiUser]
) -> None:
    other = make_api_user()
    everyone = {t["slug"] for t in platform_admin.get("/api/v1/tenants").get_json()["items"]}
    assert {api.tenant.slug, other.tenant.slug} <= everyone
    assert "_platform" not in everyone
    own = [t["slug"] for t in api.get("/api/v1/tenants").get_json()["items"]]
    assert own == [api.tenant.slug]


# --- menu -------------------------------------------------------------------------------------

CORE = [
    "people", "cards", "accounts", "approvals", "ledger", "reports", "audit", "devices",
    "monitor", "operators", "settings",
]  # fmt: skip


def _menu(user: ApiUser) -> list[str]:
    return [i["key"] for i in user.get("/api/v1/menu").get_json()["items"]]


def test_tenant_admin_menu_lists_every_core_item_in_order(api: ApiUser) -> None:
    assert _menu(api) == CORE


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("auditor", [*CORE[:7], "devices", "monitor"]),
        ("card_centre", ["people", "cards", "accounts", "approvals"]),
        ("finance", ["people", "cards", "accounts", "approvals", "ledger", "reports"]),
    ],
)
def test_menu_holds_only_items_the_operator_may_use(
    api: ApiUser, make_api_user: Callable[..., ApiUser], role: str, expected: list[str]
) -> None:
    assert _menu(make_api_user(tenant=api.tenant, roles=(role,))) == expected


def test_menu_follows_the_tenants_order_and_hidden_items(api: ApiUser) -> None:
    resp = api.patch(
        "/api/v1/settings", json={"menu_order": ["audit", "people"], "menu_hidden": ["cards"]}
    )
    assert resp.status_code == 200
    assert _menu(api) == [
        "audit",
        "people",
        "accounts",
        "approvals",
        "ledger",
        "reports",
        "devices",
        "monitor",
        "operators",
        "settings",
    ]
