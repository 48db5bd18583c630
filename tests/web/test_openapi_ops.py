"""The OpenAPI document matches the routes; operations endpoints; request ids; opaque 500s."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from sqlalchemy import Engine

from onecard.config import Settings
from onecard.testing.fixtures import ApiUser
from onecard.web import create_app


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    """``/api/v1/openapi.json`` as served (no token needed)."""
    resp = client.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    return resp.get_json()  # type: ignore[no-any-return]


def test_openapi_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def _documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    prefix = document["servers"][0]["url"]
    return {
        (method.upper(), prefix + path) for path, ops in document["paths"].items() for method in ops
    }


def _routed(app: Flask) -> set[tuple[str, str]]:
    found = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        found |= {(m, path) for m in rule.methods or () if m not in {"HEAD", "OPTIONS"}}
    return found


def test_every_route_is_documented_and_every_documented_operation_is_routed(
    app: Flask, document: dict[str, Any]
) -> None:
    assert _routed(app) == _documented(document)


def test_every_operation_documents_its_problem_responses(document: dict[str, Any]) -> None:
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            problem = op["responses"]["422"]["content"]["application/problem+json"]
            assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}, (method, path)


def test_only_login_and_the_document_itself_are_public(document: dict[str, Any]) -> None:
    public = {
        (method, path)
        for path, ops in document["paths"].items()
        for method, op in ops.items()
        if op.get("security") == []
    }
    assert public == {("post", "/auth/login"), ("get", "/openapi.json")}


def test_idempotent_writes_document_the_idempotency_key_header(document: dict[str, Any]) -> None:
    op = document["paths"]["/accounts/{account_id}/top-ups"]["post"]
    headers = [p["name"] for p in op["parameters"] if p["in"] == "header"]
    assert headers == ["Idempotency-Key"]


# --- operations endpoints ---------------------------------------------------------------------


def test_healthz_answers_ok(client: FlaskClient) -> None:
    resp = client.get("/healthz")
    assert (resp.status_code, resp.get_json()) == (200, {"status": "ok"})


def test_readyz_answers_ready_when_the_database_answers(client: FlaskClient) -> None:
    resp = client.get("/readyz")
    assert (resp.status_code, resp.get_json()) == (200, {"status": "ready", "database": "ok"})


def test_metrics_count_requests_by_endpoint_and_status(client: FlaskClient) -> None:
    client.get("/healthz")
    text = client.get("/metrics").get_data(as_text=True)
    assert "# TYPE onecard_http_requests_total counter" in text
    assert re.search(
        r'onecard_http_requests_total\{endpoint="ops.healthz",method="GET",status="200"\} '
        r"[1-9]",
        text,
    )


@pytest.mark.parametrize(
    "url", ["/healthz", "/metrics", "/api/v1/openapi.json", "/api/v1/people", "/nosuch"]
)
def test_every_response_has_a_request_id(client: FlaskClient, url: str) -> None:
    resp = client.get(url)
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-Id"])


def test_a_well_formed_incoming_request_id_is_echoed(api: ApiUser) -> None:
    resp = api.get("/api/v1/auth/me", headers={"X-Request-Id": "lb4f00dcafe42"})
    assert resp.headers["X-Request-Id"] == "lb4f00dcafe42"


@pytest.mark.parametrize("incoming", ["short", "has spaces in it", "x" * 65, "<script>1234"])
def test_a_malformed_incoming_request_id_is_replaced(client: FlaskClient, incoming: str) -> None:
    resp = client.get("/healthz", headers={"X-Request-Id": incoming})
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-Id"])


def test_api_responses_are_not_cached_or_sniffed(api: ApiUser) -> None:
    resp = api.get("/api/v1/auth/me")
    assert (resp.headers["Cache-Control"], resp.headers["X-Content-Type-Options"]) == (
        "no-store",
        "nosniff",
    )


# --- an unexpected error says nothing about internals -----------------------------------------


@pytest.fixture
def failing_client(app_settings: Settings, engine: Engine) -> FlaskClient:
    """A separate app with a route that fails with a revealing exception."""
    broken = create_app(app_settings, engine=engine)

    @broken.get("/boom")
    def boom() -> Any:
        raise RuntimeError("db password is hunter2 at /srv/secret/path.py")

    return broken.test_client()


def test_unexpected_error_is_an_opaque_500_problem(
    failing_client: FlaskClient, expect_problem: Callable[..., Any]
) -> None:
    resp = failing_client.get("/boom", headers={"X-Request-Id": "trace0000abcd"})
    body = expect_problem(resp, 500)
    text = resp.get_data(as_text=True)
    for leak in ("Traceback", "RuntimeError", "hunter2", "/srv/secret", ".py"):
        assert leak not in text
    assert body["request_id"] == "trace0000abcd"
    assert resp.headers["X-Request-Id"] == "trace0000abcd"
