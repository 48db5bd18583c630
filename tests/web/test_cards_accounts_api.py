"""Cards and money through the API, as worked examples in fen.

Every holder starts from zero; the amounts below are what an accountant would check by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from onecard.testing.fixtures import ApiUser


@pytest.fixture
def holder(api: ApiUser, new_holder: Callable[..., Any]) -> Any:
    """A holder with a 2000 fen card deposit and 10000 fen in the purse."""
    return new_holder(api, purse_fen=10000, deposit_fen=2000)


def _card(api: ApiUser, card_id: int) -> dict[str, Any]:
    return api.get(f"/api/v1/cards/{card_id}").get_json()  # type: ignore[no-any-return]


def _blacklist(api: ApiUser, from_version: int | None = None) -> dict[str, Any]:
    url = "/api/v1/blacklist" + ("" if from_version is None else f"?from_version={from_version}")
    return api.get(url).get_json()  # type: ignore[no-any-return]


def _set_threshold(api: ApiUser, fen: int) -> None:
    resp = api.patch("/api/v1/settings", json={"approval_threshold_fen": fen})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["approval_threshold_fen"] == fen


# --- cards ------------------------------------------------------------------------------------


def test_issued_card_holds_its_deposit(
    api: ApiUser, holder: Any, balance_of: Callable[..., int]
) -> None:
    assert (holder.card["status"], holder.card["deposit_fen"]) == ("active", 2000)
    assert balance_of(api, holder.deposit_id) == 2000


def test_duplicate_card_number_is_a_conflict(
    api: ApiUser, holder: Any, expect_problem: Callable[..., Any]
) -> None:
    resp = api.post(
        f"/api/v1/people/{holder.person_id}/cards", json={"card_no": holder.card["card_no"]}
    )
    expect_problem(resp, 409)


def test_lost_card_is_on_the_blacklist_snapshot_and_delta(api: ApiUser, holder: Any) -> None:
    version = _blacklist(api)["version"]
    resp = api.post(f"/api/v1/cards/{holder.card['id']}/report-loss")
    assert resp.get_json()["status"] == "lost"
    snapshot = _blacklist(api)
    assert (snapshot["kind"], snapshot["version"]) == ("snapshot", version + 1)
    assert holder.card["card_no"] in snapshot["cards"]
    delta = _blacklist(api, version)
    assert (delta["add"], delta["remove"], delta["to"]) == (
        [holder.card["card_no"]],
        [],
        version + 1,
    )
    assert [h["op"] for h in _card(api, holder.card["id"])["blacklist_history"]] == ["add"]


def test_reporting_a_lost_card_lost_again_is_an_invalid_transition(
    api: ApiUser, holder: Any, expect_problem: Callable[..., Any]
) -> None:
    api.post(f"/api/v1/cards/{holder.card['id']}/report-loss")
    body = expect_problem(api.post(f"/api/v1/cards/{holder.card['id']}/report-loss"), 409)
    assert body["type"].endswith("/invalid-transition")


@pytest.fixture
def unfreeze_request(api: ApiUser, holder: Any) -> dict[str, Any]:
    """The holder's card reported lost, then an unfreeze requested by ``api``."""
    api.post(f"/api/v1/cards/{holder.card['id']}/report-loss")
    resp = api.post(f"/api/v1/cards/{holder.card['id']}/unfreeze")
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()["approval"]  # type: ignore[no-any-return]


def test_unfreeze_waits_for_a_second_operator(
    api: ApiUser, holder: Any, unfreeze_request: dict[str, Any]
) -> None:
    assert (unfreeze_request["kind"], unfreeze_request["status"]) == ("card.unfreeze", "pending")
    assert _card(api, holder.card["id"])["status"] == "lost"
    assert holder.card["card_no"] in _blacklist(api)["cards"]


def test_approved_unfreeze_reactivates_the_card_and_leaves_the_blacklist(
    api: ApiUser, colleague: ApiUser, holder: Any, unfreeze_request: dict[str, Any]
) -> None:
    version = _blacklist(api)["version"]
    resp = colleague.post(f"/api/v1/approvals/{unfreeze_request['id']}/approve", json={})
    assert resp.get_json()["status"] == "approved"
    assert _card(api, holder.card["id"])["status"] == "active"
    assert holder.card["card_no"] not in _blacklist(api)["cards"]
    assert _blacklist(api, version)["remove"] == [holder.card["card_no"]]


def test_approving_twice_is_a_conflict(
    colleague: ApiUser, unfreeze_request: dict[str, Any], expect_problem: Callable[..., Any]
) -> None:
    url = f"/api/v1/approvals/{unfreeze_request['id']}/approve"
    colleague.post(url, json={})
    expect_problem(colleague.post(url, json={}), 409)


def test_replacement_carries_the_deposit_and_blacklists_the_old_card(
    api: ApiUser, holder: Any, balance_of: Callable[..., int]
) -> None:
    resp = api.post(f"/api/v1/cards/{holder.card['id']}/replace", json={"new_card_no": "NEW00001"})
    assert resp.status_code == 201
    new = resp.get_json()
    assert (new["status"], new["deposit_fen"], new["person_id"]) == (
        "active",
        2000,
        holder.person_id,
    )
    old = _card(api, holder.card["id"])
    assert (old["status"], old["replaced_by_id"], old["deposit_fen"]) == ("replaced", new["id"], 0)
    assert holder.card["card_no"] in _blacklist(api)["cards"]
    assert (balance_of(api, holder.purse_id), balance_of(api, holder.deposit_id)) == (10000, 2000)


def test_return_refunds_deposit_and_purse_in_cash(
    api: ApiUser, holder: Any, balance_of: Callable[..., int]
) -> None:
    _set_threshold(api, 100000)
    resp = api.post(f"/api/v1/cards/{holder.card['id']}/return")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["result"] == {
        "card_id": holder.card["id"],
        "deposit_fen": 2000,
        "purse_fen": 10000,
        "subsidy_reclaimed_fen": 0,
    }
    assert _card(api, holder.card["id"])["status"] == "returned"
    assert (balance_of(api, holder.purse_id), balance_of(api, holder.deposit_id)) == (0, 0)


def test_return_paying_more_than_the_threshold_needs_approval(
    api: ApiUser, holder: Any, balance_of: Callable[..., int]
) -> None:
    _set_threshold(api, 5000)  # the return would pay 12000
    resp = api.post(f"/api/v1/cards/{holder.card['id']}/return")
    assert resp.status_code == 202
    assert resp.get_json()["approval"]["amount_fen"] == 12000
    assert balance_of(api, holder.purse_id) == 10000


# --- top-ups ----------------------------------------------------------------------------------


def test_top_up_replayed_with_the_same_key_counts_once(
    api: ApiUser, holder: Any, post_top_up: Callable[..., Any], balance_of: Callable[..., int]
) -> None:
    key = {"Idempotency-Key": "till-7-receipt-1"}
    first = post_top_up(api, holder.purse_id, 3000, headers=key)
    again = post_top_up(api, holder.purse_id, 3000, headers=key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.get_json()["id"] == again.get_json()["id"]
    assert balance_of(api, holder.purse_id) == 13000


def test_same_key_with_another_amount_is_a_conflict(
    api: ApiUser,
    holder: Any,
    post_top_up: Callable[..., Any],
    balance_of: Callable[..., int],
    expect_problem: Callable[..., Any],
) -> None:
    key = {"Idempotency-Key": "till-7-receipt-2"}
    post_top_up(api, holder.purse_id, 3000, headers=key)
    body = expect_problem(post_top_up(api, holder.purse_id, 4000, headers=key), 409)
    assert body["type"].endswith("/idempotency-key-reused")
    assert balance_of(api, holder.purse_id) == 13000


def test_bank_top_up_with_the_same_reference_credits_once(
    api: ApiUser, holder: Any, post_top_up: Callable[..., Any], balance_of: Callable[..., int]
) -> None:
    first = post_top_up(api, holder.purse_id, 5000, channel="bank", bank_reference="ICBC-0001")
    again = post_top_up(api, holder.purse_id, 5000, channel="bank", bank_reference="ICBC-0001")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.get_json()["id"] == again.get_json()["id"]
    assert first.get_json()["code"] == "topup.bank"
    assert balance_of(api, holder.purse_id) == 15000


def test_top_up_on_a_deposit_account_is_refused(
    api: ApiUser, holder: Any, post_top_up: Callable[..., Any], expect_problem: Callable[..., Any]
) -> None:
    expect_problem(post_top_up(api, holder.deposit_id, 100), 422)


# --- refunds and four eyes --------------------------------------------------------------------


def test_refund_within_the_threshold_is_paid_at_once(
    api: ApiUser, holder: Any, balance_of: Callable[..., int]
) -> None:
    _set_threshold(api, 1000)
    resp = api.post(f"/api/v1/accounts/{holder.purse_id}/refunds", json={"amount_fen": 1000})
    assert resp.status_code == 201
    assert resp.get_json()["code"] == "refund.cash"
    assert balance_of(api, holder.purse_id) == 9000


@pytest.fixture
def big_refund(api: ApiUser, holder: Any) -> dict[str, Any]:
    """A 1500 fen refund requested by ``api`` with the threshold at 1000 fen."""
    _set_threshold(api, 1000)
    resp = api.post(
        f"/api/v1/accounts/{holder.purse_id}/refunds", json={"amount_fen": 1500, "memo": "leaving"}
    )
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json()["status"] == "pending_approval"
    return resp.get_json()["approval"]  # type: ignore[no-any-return]


def test_refund_above_the_threshold_waits_and_moves_nothing(
    api: ApiUser, holder: Any, big_refund: dict[str, Any], balance_of: Callable[..., int]
) -> None:
    assert (big_refund["kind"], big_refund["amount_fen"]) == ("refund", 1500)
    assert big_refund["requested_by_name"] == api.username
    assert balance_of(api, holder.purse_id) == 10000


def test_requester_cannot_approve_their_own_refund(
    api: ApiUser,
    holder: Any,
    big_refund: dict[str, Any],
    balance_of: Callable[..., int],
    expect_problem: Callable[..., Any],
) -> None:
    expect_problem(api.post(f"/api/v1/approvals/{big_refund['id']}/approve", json={}), 403)
    assert balance_of(api, holder.purse_id) == 10000


def test_refund_approved_by_a_second_operator_moves_the_money(
    api: ApiUser,
    colleague: ApiUser,
    holder: Any,
    big_refund: dict[str, Any],
    balance_of: Callable[..., int],
) -> None:
    resp = colleague.post(f"/api/v1/approvals/{big_refund['id']}/approve", json={"note": "ok"})
    assert resp.status_code == 200
    approval = resp.get_json()
    assert (approval["status"], approval["decided_by_name"]) == ("approved", colleague.username)
    entry = api.get(f"/api/v1/ledger/entries/{approval['result']['entry_id']}").get_json()
    assert entry["code"] == "refund.cash"
    assert balance_of(api, holder.purse_id) == 8500


def test_rejected_refund_moves_nothing(
    api: ApiUser,
    colleague: ApiUser,
    holder: Any,
    big_refund: dict[str, Any],
    balance_of: Callable[..., int],
) -> None:
    resp = colleague.post(f"/api/v1/approvals/{big_refund['id']}/reject", json={"note": "no"})
    assert resp.get_json()["status"] == "rejected"
    assert balance_of(api, holder.purse_id) == 10000
    pending = api.get("/api/v1/approvals?status=pending").get_json()
    assert pending["total"] == 0


# --- adjustments and subsidies ----------------------------------------------------------------


def test_adjustments_raise_and_lower_the_balance(
    api: ApiUser, holder: Any, balance_of: Callable[..., int]
) -> None:
    url = f"/api/v1/accounts/{holder.purse_id}/adjustments"
    assert api.post(url, json={"amount_fen": 500, "reason": "till error"}).status_code == 201
    assert api.post(url, json={"amount_fen": -200, "reason": "double tap"}).status_code == 201
    assert balance_of(api, holder.purse_id) == 10300


def test_adjustment_below_zero_balance_is_refused(
    api: ApiUser, holder: Any, balance_of: Callable[..., int], expect_problem: Callable[..., Any]
) -> None:
    url = f"/api/v1/accounts/{holder.purse_id}/adjustments"
    body = expect_problem(api.post(url, json={"amount_fen": -10001, "reason": "too much"}), 409)
    assert body["type"].endswith("/insufficient-funds")
    assert balance_of(api, holder.purse_id) == 10000


def test_subsidy_lands_in_the_subsidy_purse(
    api: ApiUser, holder: Any, balance_of: Callable[..., int]
) -> None:
    resp = api.post(f"/api/v1/accounts/{holder.subsidy_id}/subsidies", json={"amount_fen": 15000})
    assert (resp.status_code, resp.get_json()["code"]) == (201, "subsidy.grant")
    assert (balance_of(api, holder.subsidy_id), balance_of(api, holder.purse_id)) == (15000, 10000)


def test_subsidy_batch_preview_then_post_then_rerun(
    api: ApiUser, new_holder: Callable[..., Any], balance_of: Callable[..., int]
) -> None:
    a, b = new_holder(api), new_holder(api)
    batch = {
        "batch_id": "2026-09-meal",
        "lines": [
            {"person_id": a.person_id, "amount_fen": 15000},
            {"person_id": b.person_id, "amount_fen": 8000},
        ],
    }
    preview = api.post("/api/v1/subsidy-batches", json={**batch, "preview": True})
    assert (preview.status_code, preview.get_json()["total_fen"]) == (200, 23000)
    assert balance_of(api, a.subsidy_id) == 0
    posted = api.post("/api/v1/subsidy-batches", json=batch)
    assert posted.status_code == 201
    assert (len(posted.get_json()["entry_ids"]), posted.get_json()["replayed"]) == (2, 0)
    rerun = api.post("/api/v1/subsidy-batches", json=batch).get_json()
    assert (rerun["entry_ids"], rerun["replayed"]) == (posted.get_json()["entry_ids"], 2)
    assert (balance_of(api, a.subsidy_id), balance_of(api, b.subsidy_id)) == (15000, 8000)


def test_transfer_moves_value_between_purses(
    api: ApiUser, holder: Any, new_holder: Callable[..., Any], balance_of: Callable[..., int]
) -> None:
    other = new_holder(api)
    resp = api.post(
        f"/api/v1/accounts/{holder.purse_id}/transfers",
        json={"to_account_id": other.purse_id, "amount_fen": 2500},
    )
    assert resp.status_code == 201
    assert (balance_of(api, holder.purse_id), balance_of(api, other.purse_id)) == (7500, 2500)


# --- statement, journal, reversal, verification, audit ----------------------------------------


def test_statement_lists_the_lines_newest_first(api: ApiUser, holder: Any) -> None:
    api.post(f"/api/v1/accounts/{holder.purse_id}/refunds", json={"amount_fen": 300})
    page = api.get(f"/api/v1/accounts/{holder.purse_id}/statement").get_json()
    assert [(i["code"], i["amount_fen"]) for i in page["items"]] == [
        ("refund.cash", -300),
        ("topup.cash", 10000),
    ]
    assert page["total"] == 2


def test_journal_filters_by_code(api: ApiUser, holder: Any) -> None:
    page = api.get("/api/v1/ledger/entries?code=deposit.take").get_json()
    assert [e["code"] for e in page["items"]] == ["deposit.take"]
    assert sorted(ln["amount_fen"] for ln in page["items"][0]["lines"]) == [-2000, 2000]


def test_reversal_of_a_top_up_takes_the_money_back(
    api: ApiUser, holder: Any, post_top_up: Callable[..., Any], balance_of: Callable[..., int]
) -> None:
    entry = post_top_up(api, holder.purse_id, 700).get_json()
    resp = api.post(f"/api/v1/ledger/entries/{entry['id']}/reversal", json={"memo": "wrong card"})
    assert resp.status_code == 201, resp.get_json()
    reversal = resp.get_json()
    assert (reversal["code"], reversal["reverses_id"]) == ("topup.cash.reversal", entry["id"])
    assert balance_of(api, holder.purse_id) == 10000


def test_an_entry_is_reversed_only_once(
    api: ApiUser,
    holder: Any,
    post_top_up: Callable[..., Any],
    balance_of: Callable[..., int],
    expect_problem: Callable[..., Any],
) -> None:
    entry = post_top_up(api, holder.purse_id, 700).get_json()
    url = f"/api/v1/ledger/entries/{entry['id']}/reversal"
    api.post(url, json={"memo": "wrong card"})
    expect_problem(api.post(url, json={"memo": "again"}), 409)
    assert balance_of(api, holder.purse_id) == 10000


@pytest.mark.usefixtures("holder")
def test_ledger_verifies_after_all_the_movements(api: ApiUser) -> None:
    report = api.get("/api/v1/ledger/verify").get_json()
    assert (report["ok"], report["problems"], report["trial_balance_fen"]) == (True, [], 0)
    assert report["entries"] == 2  # deposit and top-up


def test_audit_trail_names_who_did_what(
    api: ApiUser, colleague: ApiUser, holder: Any, big_refund: dict[str, Any]
) -> None:
    colleague.post(f"/api/v1/approvals/{big_refund['id']}/approve", json={})
    events = api.get("/api/v1/audit/events?limit=200").get_json()["items"]
    who = {(e["type"], e["actor_id"]) for e in events}
    assert {
        ("card.issued", api.username),
        ("ledger.top_up", api.username),
        ("approval.requested", api.username),
        ("approval.approved", colleague.username),
        ("ledger.refund", colleague.username),
    } <= who
    assert api.get("/api/v1/audit/verify").get_json() == {
        "ok": True,
        "events": len(events),
        "first_bad": None,
    }
