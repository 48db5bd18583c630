"""Factories shared by the API tests: people, cards and holders made through the API itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from argon2 import PasswordHasher

from onecard.platform.authz import services as authz
from onecard.testing.fixtures import ApiUser, unique

PROBLEM_TYPE = "application/problem+json"


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    """Argon2 with the smallest cost: every API test logs in, and these tests are about the API.

    Hashes record their own parameters, so verification stays correct; only speed changes.
    """
    cheap = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(authz, "_hasher", cheap)
        mp.setattr(authz, "_DUMMY_HASH", cheap.hash("timing-equaliser-not-a-password"))
        yield


def _assert_problem(resp: Any, status: int) -> dict[str, Any]:
    """``resp`` is an RFC 9457 problem document with ``status``; returns its body."""
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
    assert resp.mimetype == PROBLEM_TYPE
    body = resp.get_json()
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert body["title"]
    return body  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Holder:
    """A person with one card and their holder accounts (ids as the API reports them)."""

    person: dict[str, Any]
    card: dict[str, Any]
    accounts: dict[str, dict[str, Any]]

    @property
    def person_id(self) -> int:
        """The person's id."""
        return int(self.person["id"])

    @property
    def purse_id(self) -> int:
        """The id of the holder's purse."""
        return int(self.accounts["holder.purse"]["id"])

    @property
    def subsidy_id(self) -> int:
        """The id of the holder's subsidy purse."""
        return int(self.accounts["holder.subsidy"]["id"])

    @property
    def deposit_id(self) -> int:
        """The id of the holder's deposit account."""
        return int(self.accounts["holder.deposit"]["id"])


@pytest.fixture
def new_person() -> Callable[..., dict[str, Any]]:
    """Factory: ``new_person(api, **fields)`` creates a person through the API."""

    def _make(api: ApiUser, **fields: Any) -> dict[str, Any]:
        body = {"person_no": unique("P"), "name": "测试 Person", "identity_class": "staff"}
        body.update(fields)
        resp = api.post("/api/v1/people", json=body)
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()  # type: ignore[no-any-return]

    return _make


@pytest.fixture
def new_card() -> Callable[..., dict[str, Any]]:
    """Factory: ``new_card(api, person_id, **fields)`` issues a card through the API."""

    def _make(api: ApiUser, person_id: int, **fields: Any) -> dict[str, Any]:
        body = {"card_no": unique("C"), **fields}
        resp = api.post(f"/api/v1/people/{person_id}/cards", json=body)
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()  # type: ignore[no-any-return]

    return _make


def _accounts_of(api: ApiUser, person_id: int) -> dict[str, dict[str, Any]]:
    """The holder accounts of a person by kind (with ``balance_fen``)."""
    resp = api.get(f"/api/v1/accounts?person_id={person_id}")
    assert resp.status_code == 200, resp.get_json()
    return {a["kind"]: a for a in resp.get_json()["items"]}


def _balance(api: ApiUser, account_id: int) -> int:
    """The normal balance of an account in fen."""
    resp = api.get(f"/api/v1/accounts/{account_id}")
    assert resp.status_code == 200, resp.get_json()
    return int(resp.get_json()["balance_fen"])


def _top_up(api: ApiUser, account_id: int, amount_fen: int, **kw: Any) -> Any:
    """POST a cash top-up (``headers``/extra body fields via ``kw``)."""
    headers = kw.pop("headers", None)
    return api.post(
        f"/api/v1/accounts/{account_id}/top-ups",
        json={"amount_fen": amount_fen, **kw},
        headers=headers,
    )


@pytest.fixture
def new_holder(
    new_person: Callable[..., dict[str, Any]], new_card: Callable[..., dict[str, Any]]
) -> Callable[..., Holder]:
    """Factory: ``new_holder(api, purse_fen=0, deposit_fen=0, **person_fields)``."""

    def _make(api: ApiUser, purse_fen: int = 0, deposit_fen: int = 0, **fields: Any) -> Holder:
        person = new_person(api, **fields)
        card = new_card(api, person["id"], deposit_fen=deposit_fen)
        accounts = _accounts_of(api, person["id"])
        if purse_fen:
            resp = _top_up(api, accounts["holder.purse"]["id"], purse_fen)
            assert resp.status_code == 201, resp.get_json()
        return Holder(person, card, accounts)

    return _make


@pytest.fixture
def colleague(api: ApiUser, make_api_user: Callable[..., ApiUser]) -> ApiUser:
    """A second tenant administrator in ``api``'s tenant (the four-eyes partner)."""
    return make_api_user(tenant=api.tenant)


def _total(api: ApiUser, url: str) -> int:
    """The ``total`` of a paginated collection."""
    sep = "&" if "?" in url else "?"
    resp = api.get(f"{url}{sep}limit=1")
    assert resp.status_code == 200, resp.get_json()
    return int(resp.get_json()["total"])


# Helpers as fixtures (tests run in importlib mode and cannot import this file).


@pytest.fixture
def expect_problem() -> Callable[[Any, int], dict[str, Any]]:
    """``expect_problem(resp, status)`` asserts a problem document and returns its body."""
    return _assert_problem


@pytest.fixture
def accounts_of() -> Callable[[ApiUser, int], dict[str, dict[str, Any]]]:
    """``accounts_of(api, person_id)``: holder accounts by kind."""
    return _accounts_of


@pytest.fixture
def balance_of() -> Callable[[ApiUser, int], int]:
    """``balance_of(api, account_id)``: normal balance in fen."""
    return _balance


@pytest.fixture
def post_top_up() -> Callable[..., Any]:
    """``post_top_up(api, account_id, amount_fen, headers=..., **body)``: the raw response."""
    return _top_up


@pytest.fixture
def total_of() -> Callable[[ApiUser, str], int]:
    """``total_of(api, url)``: the ``total`` of a paginated collection."""
    return _total
