"""Bad requests get a 4xx problem document and change nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from onecard.testing.fixtures import ApiUser

PERSON = {"person_no": "B1", "name": "Bad Input", "identity_class": "staff"}


@pytest.fixture
def target(api: ApiUser, new_holder: Callable[..., Any]) -> dict[str, int]:
    """Ids the bad requests aim at: a holder with 1000 fen in the purse."""
    holder = new_holder(api, purse_fen=1000)
    return {"person": holder.person_id, "purse": holder.purse_id, "card": holder.card["id"]}


@pytest.fixture
def counts(api: ApiUser, total_of: Callable[..., int]) -> Callable[[], dict[str, int]]:
    """What a bad request must not change: people, entries and audit events of the tenant."""

    def _counts() -> dict[str, int]:
        return {
            "people": total_of(api, "/api/v1/people"),
            "entries": total_of(api, "/api/v1/ledger/entries"),
            "audit": total_of(api, "/api/v1/audit/events"),
            "sites": len(api.get("/api/v1/sites").get_json()["items"]),
        }

    return _counts


def _json(body: Any) -> dict[str, Any]:
    return {"json": body}


def _raw(data: str | bytes, content_type: str) -> dict[str, Any]:
    return {"data": data, "content_type": content_type}


CASES: list[tuple[str, str, str, dict[str, Any], int]] = [
    # (case id, method, url, request kwargs, status)
    ("malformed JSON", "post", "/people", _raw('{"person_no": "B1",', "application/json"), 400),
    ("empty JSON body", "post", "/people", _raw("", "application/json"), 400),
    (
        "form content type",
        "post",
        "/people",
        _raw("person_no=B1&name=x&identity_class=staff", "application/x-www-form-urlencoded"),
        400,
    ),
    (
        "text content type",
        "post",
        "/people",
        _raw('{"person_no":"B1","name":"x","identity_class":"staff"}', "text/plain"),
        400,
    ),
    ("JSON array body", "post", "/people", _json([PERSON]), 422),
    ("unknown person field", "post", "/people", _json({**PERSON, "salary": 1}), 422),
    ("name of 101 chars", "post", "/people", _json({**PERSON, "name": "名" * 101}), 422),
    ("person_no of 33 chars", "post", "/people", _json({**PERSON, "person_no": "P" * 33}), 422),
    ("person_no with a space", "post", "/people", _json({**PERSON, "person_no": "B 1"}), 422),
    ("unknown identity class", "post", "/people", _json({**PERSON, "identity_class": "x"}), 422),
    ("missing name", "post", "/people", _json({"person_no": "B1", "identity_class": "staff"}), 422),
    ("name as a number", "post", "/people", _json({**PERSON, "name": 7}), 422),
    (
        "valid_until before valid_from",
        "post",
        "/people",
        _json({**PERSON, "valid_from": "2026-09-01", "valid_until": "2026-08-31"}),
        422,
    ),
    ("impossible date", "post", "/people", _json({**PERSON, "valid_from": "2026-02-30"}), 422),
    (
        "patch valid_until before valid_from",
        "patch",
        "/people/{person}",
        _json({"valid_from": "2026-09-01", "valid_until": "2026-01-01"}),
        422,
    ),
    ("patch unknown field", "patch", "/people/{person}", _json({"person_no": "NEW"}), 422),
    ("amount as text", "post", "/accounts/{purse}/top-ups", _json({"amount_fen": "100"}), 422),
    ("amount as float", "post", "/accounts/{purse}/top-ups", _json({"amount_fen": 1.5}), 422),
    (
        "amount as whole float",
        "post",
        "/accounts/{purse}/top-ups",
        _json({"amount_fen": 100.0}),
        422,
    ),
    ("amount as boolean", "post", "/accounts/{purse}/top-ups", _json({"amount_fen": True}), 422),
    ("amount missing", "post", "/accounts/{purse}/top-ups", _json({}), 422),
    ("amount negative", "post", "/accounts/{purse}/top-ups", _json({"amount_fen": -100}), 422),
    ("amount zero", "post", "/accounts/{purse}/top-ups", _json({"amount_fen": 0}), 422),
    (
        "amount over the limit",
        "post",
        "/accounts/{purse}/top-ups",
        _json({"amount_fen": 10**12 + 1}),
        422,
    ),
    (
        "unknown top-up field",
        "post",
        "/accounts/{purse}/top-ups",
        _json({"amount_fen": 100, "currency": "USD"}),
        422,
    ),
    (
        "unknown channel",
        "post",
        "/accounts/{purse}/top-ups",
        _json({"amount_fen": 100, "channel": "crypto"}),
        422,
    ),
    (
        "bank top-up without reference",
        "post",
        "/accounts/{purse}/top-ups",
        _json({"amount_fen": 100, "channel": "bank"}),
        422,
    ),
    ("refund zero", "post", "/accounts/{purse}/refunds", _json({"amount_fen": 0}), 422),
    ("refund fractional", "post", "/accounts/{purse}/refunds", _json({"amount_fen": 0.5}), 422),
    (
        "refund more than the purse",
        "post",
        "/accounts/{purse}/refunds",
        _json({"amount_fen": 1001}),
        409,
    ),
    (
        "adjustment zero",
        "post",
        "/accounts/{purse}/adjustments",
        _json({"amount_fen": 0, "reason": "nothing"}),
        422,
    ),
    (
        "adjustment without reason",
        "post",
        "/accounts/{purse}/adjustments",
        _json({"amount_fen": 5}),
        422,
    ),
    ("subsidy negative", "post", "/accounts/{purse}/subsidies", _json({"amount_fen": -5}), 422),
    ("card_no too short", "post", "/people/{person}/cards", _json({"card_no": "C1"}), 422),
    (
        "deposit negative",
        "post",
        "/people/{person}/cards",
        _json({"card_no": "C12345", "deposit_fen": -1}),
        422,
    ),
    (
        "lower-case uid",
        "post",
        "/people/{person}/cards",
        _json({"card_no": "C12345", "uid": "deadbeef"}),
        422,
    ),
    ("unknown person", "get", "/people/999999999", {}, 404),
    ("person id not a number", "get", "/people/abc", {}, 404),
    ("patch unknown person", "patch", "/people/999999999", _json({"name": "x"}), 404),
    ("delete unknown person", "delete", "/people/999999999", {}, 404),
    ("unknown card", "get", "/cards/999999999", {}, 404),
    ("report loss of unknown card", "post", "/cards/999999999/report-loss", {}, 404),
    ("unknown account", "get", "/accounts/999999999", {}, 404),
    (
        "top-up of unknown account",
        "post",
        "/accounts/999999999/top-ups",
        _json({"amount_fen": 100}),
        404,
    ),
    ("unknown entry", "get", "/ledger/entries/999999999", {}, 404),
    (
        "reverse unknown entry",
        "post",
        "/ledger/entries/999999999/reversal",
        _json({"memo": "undo"}),
        404,
    ),
    ("unknown approval", "get", "/approvals/999999999", {}, 404),
    ("approve unknown approval", "post", "/approvals/999999999/approve", _json({}), 404),
    ("unknown operator", "get", "/operators/999999999", {}, 404),
    ("unknown module", "put", "/modules/nosuch", _json({"enabled": True}), 404),
    ("unknown path", "get", "/nosuch", {}, 404),
    ("wrong method", "delete", "/sites", {}, 405),
    (
        "bad timezone",
        "post",
        "/sites",
        _json({"code": "S1", "name": "S", "timezone": "Mars/Base"}),
        422,
    ),
    (
        "timezone of wrong case",
        "post",
        "/sites",
        _json({"code": "S1", "name": "S", "timezone": "asia/shanghai"}),
        422,
    ),
    ("unknown setting", "patch", "/settings", _json({"colour": "red"}), 422),
    ("negative threshold", "patch", "/settings", _json({"approval_threshold_fen": -1}), 422),
    ("unknown menu item", "patch", "/settings", _json({"menu_order": ["nosuch"]}), 422),
    ("limit zero", "get", "/people?limit=0", {}, 422),
    ("limit too large", "get", "/people?limit=201", {}, 422),
    ("limit not a number", "get", "/people?limit=ten", {}, 422),
    ("offset negative", "get", "/people?offset=-1", {}, 422),
    ("over-long search", "get", "/people?q=" + "x" * 101, {}, 422),
    ("entry filter bad date", "get", "/ledger/entries?recorded_from=yesterday", {}, 422),
    ("unknown approval status", "get", "/approvals?status=maybe", {}, 422),
    ("unknown query parameter without query model", "get", "/settings?verbose=1", {}, 400),
]


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_request_gets_a_problem_document_and_changes_nothing(
    api: ApiUser,
    target: dict[str, int],
    counts: Callable[[], dict[str, int]],
    expect_problem: Callable[..., Any],
    method: str,
    url: str,
    kwargs: dict[str, Any],
    status: int,
) -> None:
    before = counts()
    resp = getattr(api, method)("/api/v1" + url.format(**target), **kwargs)
    expect_problem(resp, status)
    assert counts() == before


def test_validation_problem_names_the_offending_field(
    api: ApiUser, expect_problem: Callable[..., Any]
) -> None:
    body = expect_problem(api.post("/api/v1/people", json={**PERSON, "name": "x" * 101}), 422)
    assert [e["field"] for e in body["errors"]] == ["name"]


def test_problem_document_carries_the_request_path_and_id(
    api: ApiUser, expect_problem: Callable[..., Any]
) -> None:
    resp = api.get("/api/v1/people/999999999", headers={"X-Request-Id": "abcdef0123456789"})
    body = expect_problem(resp, 404)
    assert body["instance"] == "/api/v1/people/999999999"
    assert body["request_id"] == "abcdef0123456789"


def test_boundary_lengths_are_accepted(api: ApiUser) -> None:
    resp = api.post("/api/v1/people", json={**PERSON, "person_no": "P" * 32, "name": "名" * 100})
    assert resp.status_code == 201


def test_unknown_query_parameter_answers_400_like_everywhere_else(
    api: ApiUser, expect_problem: Callable[..., Any]
) -> None:
    expect_problem(api.get("/api/v1/people?colour=red"), 400)


@pytest.mark.parametrize("url", ["/people", "/cards", "/ledger/entries", "/audit/events"])
def test_unknown_query_parameter_is_refused_by_name(
    api: ApiUser, expect_problem: Callable[..., Any], url: str
) -> None:
    resp = api.get(f"/api/v1{url}?colour=red")
    assert resp.status_code in (400, 422)
    body = expect_problem(resp, resp.status_code)
    assert "colour" in resp.get_data(as_text=True), body


@pytest.mark.parametrize("field", ["name", "identity_class"])
def test_patch_setting_a_required_field_to_null_is_refused(
    api: ApiUser,
    target: dict[str, int],
    counts: Callable[[], dict[str, int]],
    expect_problem: Callable[..., Any],
    field: str,
) -> None:
    before = counts()
    resp = api.patch(f"/api/v1/people/{target['person']}", json={field: None})
    expect_problem(resp, 422)
    assert counts() == before


# --- authentication and permission ------------------------------------------------------------

AUTH_HEADERS = [
    ("no header", {}),
    ("empty bearer", {"Authorization": "Bearer "}),
    ("unknown token", {"Authorization": "Bearer not-a-real-token"}),
    ("basic scheme", {"Authorization": "Basic YWRtaW46cGFzc3dvcmQ="}),
]


@pytest.mark.parametrize("headers", [h for _, h in AUTH_HEADERS], ids=[i for i, _ in AUTH_HEADERS])
def test_request_without_a_valid_bearer_token_is_401(
    client: Any,
    api: ApiUser,
    counts: Callable[[], dict[str, int]],
    expect_problem: Callable[..., Any],
    headers: dict[str, str],
) -> None:
    before = counts()
    resp = client.post("/api/v1/people", json=PERSON, headers=headers)
    expect_problem(resp, 401)
    assert counts() == before


AUDITOR_WRITES = [
    ("post", "/people", _json(PERSON)),
    ("patch", "/people/{person}", _json({"name": "Renamed"})),
    ("delete", "/people/{person}", {}),
    ("post", "/people/{person}/cards", _json({"card_no": "AUD12345"})),
    ("post", "/cards/{card}/report-loss", {}),
    ("post", "/accounts/{purse}/top-ups", _json({"amount_fen": 100})),
    ("post", "/accounts/{purse}/refunds", _json({"amount_fen": 100})),
    ("post", "/sites", _json({"code": "S1", "name": "S"})),
    ("post", "/operators", _json({"username": "mallory", "password": "x" * 12})),
    ("patch", "/settings", _json({"approval_threshold_fen": 0})),
    ("post", "/people/import", _raw("person_no,name,identity_class\nA1,a,staff\n", "text/csv")),
]


@pytest.mark.parametrize(
    ("method", "url", "kwargs"), AUDITOR_WRITES, ids=[f"{m} {u}" for m, u, _ in AUDITOR_WRITES]
)
def test_auditor_cannot_write(
    api: ApiUser,
    make_api_user: Callable[..., ApiUser],
    target: dict[str, int],
    counts: Callable[[], dict[str, int]],
    expect_problem: Callable[..., Any],
    method: str,
    url: str,
    kwargs: dict[str, Any],
) -> None:
    auditor = make_api_user(tenant=api.tenant, roles=("auditor",))
    before = counts()
    resp = getattr(auditor, method)("/api/v1" + url.format(**target), **kwargs)
    body = expect_problem(resp, 403)
    assert "permission" in body["detail"] or "permission" in body
    assert counts() == before
