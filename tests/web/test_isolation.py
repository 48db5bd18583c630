"""Tenant isolation and data scope through the API: another tenant's ids look like no ids."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from onecard.testing.fixtures import ApiUser


@dataclass(frozen=True)
class Victim:
    """Tenant A's objects that tenant B will guess the ids of."""

    api: ApiUser
    person: dict[str, Any]
    card: dict[str, Any]
    purse_id: int
    entry_id: int
    approval_id: int


@pytest.fixture
def victim(
    api: ApiUser,
    new_holder: Callable[..., Any],
    new_person: Callable[..., dict[str, Any]],
    post_top_up: Callable[..., Any],
) -> Victim:
    """Tenant A: a holder with a card, a 5000 fen purse, and a pending person deletion."""
    holder = new_holder(api, deposit_fen=1000)
    entry = post_top_up(api, holder.purse_id, 5000).get_json()
    doomed = new_person(api)
    approval = api.delete(f"/api/v1/people/{doomed['id']}").get_json()["approval"]
    return Victim(api, holder.person, holder.card, holder.purse_id, entry["id"], approval["id"])


@pytest.fixture
def intruder(make_api_user: Callable[..., ApiUser]) -> ApiUser:
    """Tenant B's administrator (every permission, in a tenant of their own)."""
    return make_api_user()


def _snapshot(v: Victim) -> dict[str, Any]:
    """What tenant A can see of its own objects."""
    api = v.api
    return {
        "person": api.get(f"/api/v1/people/{v.person['id']}").get_json(),
        "card": api.get(f"/api/v1/cards/{v.card['id']}").get_json(),
        "purse": api.get(f"/api/v1/accounts/{v.purse_id}").get_json()["balance_fen"],
        "entries": api.get("/api/v1/ledger/entries?limit=1").get_json()["total"],
        "approval": api.get(f"/api/v1/approvals/{v.approval_id}").get_json()["status"],
    }


GUESSES = [
    ("get", "/api/v1/people/{person}", None),
    ("patch", "/api/v1/people/{person}", {"name": "Hijacked"}),
    ("delete", "/api/v1/people/{person}", None),
    ("get", "/api/v1/people/{person}/photo", None),
    ("post", "/api/v1/people/{person}/cards", {"card_no": "STOLEN01"}),
    ("get", "/api/v1/cards/{card}", None),
    ("post", "/api/v1/cards/{card}/report-loss", None),
    ("post", "/api/v1/cards/{card}/freeze", {"reason": "x"}),
    ("post", "/api/v1/cards/{card}/return", None),
    ("post", "/api/v1/cards/{card}/replace", {"new_card_no": "STOLEN02"}),
    ("get", "/api/v1/accounts/{purse}", None),
    ("get", "/api/v1/accounts/{purse}/statement", None),
    ("post", "/api/v1/accounts/{purse}/top-ups", {"amount_fen": 100}),
    ("post", "/api/v1/accounts/{purse}/refunds", {"amount_fen": 100}),
    ("post", "/api/v1/accounts/{purse}/adjustments", {"amount_fen": -100, "reason": "steal"}),
    ("get", "/api/v1/ledger/entries/{entry}", None),
    ("post", "/api/v1/ledger/entries/{entry}/reversal", {"memo": "undo it"}),
    ("get", "/api/v1/approvals/{approval}", None),
    ("post", "/api/v1/approvals/{approval}/approve", {}),
    ("post", "/api/v1/approvals/{approval}/reject", {}),
]


@pytest.mark.parametrize(
    ("method", "template", "body"), GUESSES, ids=[f"{m} {t}" for m, t, _ in GUESSES]
)
def test_other_tenants_id_answers_404_and_changes_nothing(
    victim: Victim,
    intruder: ApiUser,
    expect_problem: Callable[..., Any],
    method: str,
    template: str,
    body: dict[str, Any] | None,
) -> None:
    before = _snapshot(victim)
    url = template.format(
        person=victim.person["id"],
        card=victim.card["id"],
        purse=victim.purse_id,
        entry=victim.entry_id,
        approval=victim.approval_id,
    )
    kwargs = {} if body is None else {"json": body}
    expect_problem(getattr(intruder, method)(url, **kwargs), 404)
    assert _snapshot(victim) == before


@pytest.mark.parametrize("field", ["person_no", "name", "card_no"])
def test_search_never_finds_another_tenants_person(
    victim: Victim, intruder: ApiUser, field: str
) -> None:
    q = victim.card["card_no"] if field == "card_no" else victim.person[field]
    resp = intruder.get("/api/v1/people", query_string={"q": q})
    assert resp.status_code == 200
    assert resp.get_json()["items"] == []
    assert resp.get_json()["total"] == 0


def test_own_search_finds_the_person_the_other_tenant_cannot(victim: Victim) -> None:
    resp = victim.api.get("/api/v1/people", query_string={"q": victim.card["card_no"]})
    assert [p["id"] for p in resp.get_json()["items"]] == [victim.person["id"]]


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/cards?card_no={card_no}",
        "/api/v1/cards?person_id={person}",
        "/api/v1/accounts?person_id={person}",
        "/api/v1/ledger/entries?account_id={purse}",
        "/api/v1/approvals",
        "/api/v1/audit/events?object_type=person&object_id={person}",
    ],
)
def test_other_tenants_objects_are_absent_from_lists(
    victim: Victim, intruder: ApiUser, url: str
) -> None:
    resp = intruder.get(
        url.format(
            card_no=victim.card["card_no"], person=victim.person["id"], purse=victim.purse_id
        )
    )
    assert resp.status_code in (200, 404)
    if resp.status_code == 200:
        assert resp.get_json()["items"] == []


def test_blacklist_of_one_tenant_does_not_show_another_tenants_lost_card(
    victim: Victim, intruder: ApiUser
) -> None:
    victim.api.post(f"/api/v1/cards/{victim.card['id']}/report-loss")
    snapshot = intruder.get("/api/v1/blacklist").get_json()
    assert victim.card["card_no"] not in snapshot["cards"]
    assert snapshot["version"] == 0


# --- data scope: an operator scoped to an org unit sees only that subtree ---------------------


@dataclass(frozen=True)
class OrgTree:
    """``faculty`` ⊃ ``department``; ``other`` is a sibling; people in each and in none."""

    faculty: int
    department: int
    other: int
    people: dict[str, dict[str, Any]]


@pytest.fixture
def org_tree(api: ApiUser, new_holder: Callable[..., Any]) -> OrgTree:
    """Three org units and one holder in each (plus one holder in no org unit)."""

    def unit(code: str, parent: int | None = None) -> int:
        resp = api.post("/api/v1/org-units", json={"code": code, "name": code, "parent_id": parent})
        assert resp.status_code == 201, resp.get_json()
        return int(resp.get_json()["id"])

    faculty = unit("FAC")
    department = unit("DEP", faculty)
    other = unit("OTH")
    people = {
        "faculty": new_holder(api, purse_fen=100, org_unit_id=faculty, name="Scope Fac"),
        "department": new_holder(api, purse_fen=100, org_unit_id=department, name="Scope Dep"),
        "other": new_holder(api, purse_fen=100, org_unit_id=other, name="Scope Oth"),
        "nowhere": new_holder(api, purse_fen=100, name="Scope None"),
    }
    return OrgTree(faculty, department, other, {k: _as_dict(h) for k, h in people.items()})


def _as_dict(holder: Any) -> dict[str, Any]:
    return {
        "id": holder.person_id,
        "card_id": holder.card["id"],
        "purse_id": holder.purse_id,
        "person_no": holder.person["person_no"],
    }


@pytest.fixture
def faculty_clerk(
    api: ApiUser, org_tree: OrgTree, make_api_user: Callable[..., ApiUser]
) -> ApiUser:
    """A card-centre operator whose data scope is the faculty (and so its department)."""
    return make_api_user(
        tenant=api.tenant, roles=("card_centre",), scope={"org_units": [org_tree.faculty]}
    )


def test_scoped_operator_search_lists_only_their_subtree(
    org_tree: OrgTree, faculty_clerk: ApiUser
) -> None:
    resp = faculty_clerk.get("/api/v1/people", query_string={"q": "Scope"})
    names = sorted(p["name"] for p in resp.get_json()["items"])
    assert names == ["Scope Dep", "Scope Fac"]
    assert resp.get_json()["total"] == 2


@pytest.mark.parametrize(
    ("who", "visible"),
    [
        ("faculty", True),
        ("department", True),
        ("other", False),
        ("nowhere", False),
    ],
)
def test_scoped_operator_reads_a_person_only_inside_their_subtree(
    org_tree: OrgTree, faculty_clerk: ApiUser, who: str, visible: bool
) -> None:
    person = org_tree.people[who]
    urls = [
        f"/api/v1/people/{person['id']}",
        f"/api/v1/cards/{person['card_id']}",
        f"/api/v1/accounts/{person['purse_id']}",
    ]
    assert [faculty_clerk.get(u).status_code for u in urls] == [200 if visible else 404] * 3


def test_scoped_operator_cannot_top_up_outside_their_subtree(
    api: ApiUser,
    org_tree: OrgTree,
    faculty_clerk: ApiUser,
    post_top_up: Callable[..., Any],
    balance_of: Callable[..., int],
) -> None:
    purse = org_tree.people["other"]["purse_id"]
    assert post_top_up(faculty_clerk, purse, 500).status_code == 404
    assert balance_of(api, purse) == 100


def test_scoped_operator_card_list_holds_only_their_subtree(
    org_tree: OrgTree, faculty_clerk: ApiUser
) -> None:
    cards = faculty_clerk.get("/api/v1/cards?limit=200").get_json()["items"]
    expected = {org_tree.people["faculty"]["card_id"], org_tree.people["department"]["card_id"]}
    assert {c["id"] for c in cards} == expected


def test_scoped_operator_cannot_place_a_person_outside_their_subtree(
    org_tree: OrgTree, faculty_clerk: ApiUser, expect_problem: Callable[..., Any]
) -> None:
    resp = faculty_clerk.post(
        "/api/v1/people",
        json={
            "person_no": "OUT1",
            "name": "Out",
            "identity_class": "staff",
            "org_unit_id": org_tree.other,
        },
    )
    expect_problem(resp, 403)


def test_scoped_operator_cannot_move_a_person_out_of_their_subtree(
    api: ApiUser, org_tree: OrgTree, faculty_clerk: ApiUser, expect_problem: Callable[..., Any]
) -> None:
    person = org_tree.people["department"]["id"]
    resp = faculty_clerk.patch(f"/api/v1/people/{person}", json={"org_unit_id": org_tree.other})
    expect_problem(resp, 403)
    assert api.get(f"/api/v1/people/{person}").get_json()["org_unit_id"] == org_tree.department


def test_scoped_operator_sees_none_of_the_tenants_own_accounts(
    org_tree: OrgTree, faculty_clerk: ApiUser
) -> None:
    assert faculty_clerk.get("/api/v1/accounts").get_json()["items"] == []
