"""``/people``: create, read, change, search, paginate, import, photos, deletion by four eyes."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from openpyxl import Workbook

from onecard.testing.fixtures import ApiUser

HEADER = "person_no,name,identity_class,org_unit_code,phone,email,valid_from,valid_until\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32


def _csv(*rows: str) -> bytes:
    return (HEADER + "".join(r + "\n" for r in rows)).encode()


def _import(api: ApiUser, data: bytes, query: str = "", ctype: str = "text/csv") -> Any:
    return api.post(f"/api/v1/people/import{query}", data=data, content_type=ctype)


def _search(api: ApiUser, q: str, **params: Any) -> dict[str, Any]:
    resp = api.get("/api/v1/people", query_string={"q": q, **params})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()  # type: ignore[no-any-return]


def _person_nos(page: dict[str, Any]) -> list[str]:
    return [p["person_no"] for p in page["items"]]


# --- create, read, change ---------------------------------------------------------------------


def test_created_person_is_returned_with_all_fields(api: ApiUser) -> None:
    resp = api.post(
        "/api/v1/people",
        json={
            "person_no": "S2026001",
            "name": " 王小明 ",
            "identity_class": "student",
            "phone": "+86 138",
            "email": "xm@example.edu",
            "valid_from": "2026-09-01",
            "valid_until": "2030-07-01",
        },
    )
    assert resp.status_code == 201
    body = resp.get_json()
    assert body["name"] == "王小明"  # surrounding whitespace is stripped
    assert (body["person_no"], body["identity_class"]) == ("S2026001", "student")
    assert (body["valid_from"], body["valid_until"]) == ("2026-09-01", "2030-07-01")
    assert api.get(f"/api/v1/people/{body['id']}").get_json() == body


def test_duplicate_person_number_is_a_conflict(
    api: ApiUser, new_person: Callable[..., Any], expect_problem: Callable[..., Any]
) -> None:
    new_person(api, person_no="DUP1")
    resp = api.post(
        "/api/v1/people", json={"person_no": "DUP1", "name": "x", "identity_class": "staff"}
    )
    expect_problem(resp, 409)


def test_patch_changes_only_the_given_fields(api: ApiUser, new_person: Callable[..., Any]) -> None:
    person = new_person(api, name="Old Name", phone="123")
    resp = api.patch(f"/api/v1/people/{person['id']}", json={"name": "New Name"})
    assert resp.status_code == 200
    after = api.get(f"/api/v1/people/{person['id']}").get_json()
    assert (after["name"], after["phone"]) == ("New Name", "123")


def test_patch_is_audited_with_before_and_after(
    api: ApiUser, new_person: Callable[..., Any]
) -> None:
    person = new_person(api, name="Before")
    api.patch(f"/api/v1/people/{person['id']}", json={"name": "After"})
    events = api.get(
        f"/api/v1/audit/events?type=person.updated&object_id={person['id']}"
    ).get_json()["items"]
    assert [e["data"] for e in events] == [
        {"before": {"name": "Before"}, "after": {"name": "After"}}
    ]


# --- search and pagination --------------------------------------------------------------------


@pytest.fixture
def family(api: ApiUser, new_person: Callable[..., Any], new_card: Callable[..., Any]) -> None:
    """张三 (Z001, card ZC001), 张三丰 (Z002), 李四 (L001)."""
    zs = new_person(api, person_no="Z001", name="张三")
    new_card(api, zs["id"], card_no="ZC001")
    new_person(api, person_no="Z002", name="张三丰")
    new_person(api, person_no="L001", name="李四")


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("张三", ["Z001", "Z002"]),
        ("张三丰", ["Z002"]),
        ("Z00", ["Z001", "Z002"]),
        ("L001", ["L001"]),
        ("ZC001", ["Z001"]),
        ("ZC00", []),  # card numbers match exactly, not by prefix
        ("三", []),  # names match by prefix, not anywhere
        ("%", []),  # wildcards are plain text
    ],
)
@pytest.mark.usefixtures("family")
def test_search_matches_name_or_number_prefix_or_exact_card(
    api: ApiUser, q: str, expected: list[str]
) -> None:
    assert _person_nos(_search(api, q)) == expected


def test_list_is_a_pagination_envelope(api: ApiUser, new_person: Callable[..., Any]) -> None:
    for n in range(5):
        new_person(api, person_no=f"PG{n}")
    page = _search(api, "PG", limit=2, offset=2)
    assert set(page) == {"items", "total", "limit", "offset", "total_capped"}
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 2)
    assert page["total_capped"] is False
    assert _person_nos(page) == ["PG2", "PG3"]


def test_page_past_the_end_is_empty_with_the_total(
    api: ApiUser, new_person: Callable[..., Any]
) -> None:
    new_person(api, person_no="END1")
    page = _search(api, "END", offset=10)
    assert (page["items"], page["total"]) == ([], 1)


def test_filter_by_identity_class(api: ApiUser, new_person: Callable[..., Any]) -> None:
    new_person(api, person_no="IC1", identity_class="visitor")
    new_person(api, person_no="IC2", identity_class="staff")
    assert _person_nos(_search(api, "IC", identity_class="visitor")) == ["IC1"]


# --- import -----------------------------------------------------------------------------------


def test_good_csv_imports_every_row(api: ApiUser) -> None:
    resp = _import(
        api,
        _csv("IM1,甲,staff,,,,,", "IM2,乙,student,,,,2026-09-01,2027-07-01", "IM3,丙,visitor,,,,,"),
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {
        "rows": 3,
        "imported": 3,
        "skipped": 0,
        "error_count": 0,
        "errors": [],
    }
    assert _person_nos(_search(api, "IM")) == ["IM1", "IM2", "IM3"]


def test_csv_with_a_bad_row_imports_nothing_and_names_row_and_field(api: ApiUser) -> None:
    resp = _import(
        api, _csv("BR1,甲,staff,,,,,", "BR2,乙,staff,,not-a-phone,,,", "BR3,丙,staff,,,,,")
    )
    assert resp.status_code == 422
    body = resp.get_json()
    assert (body["rows"], body["imported"], body["error_count"]) == (3, 0, 1)
    assert [(e["row"], e["field"]) for e in body["errors"]] == [(2, "phone")]
    assert _search(api, "BR")["total"] == 0


def test_import_error_for_unknown_identity_class_names_the_field(api: ApiUser) -> None:
    resp = _import(api, _csv("IC1,乙,wizard,,,,,"))
    assert [(e["row"], e["field"]) for e in resp.get_json()["errors"]] == [(1, "identity_class")]


def test_skip_bad_rows_imports_the_good_ones(api: ApiUser) -> None:
    resp = _import(
        api,
        _csv("SK1,甲,staff,,,,,", "SK2,,staff,,,,,", "SK3,丙,staff,,,,2026-09-01,2026-01-01"),
        "?skip_bad_rows=true",
    )
    assert resp.status_code == 200
    body = resp.get_json()
    assert (body["imported"], body["skipped"]) == (1, 2)
    assert [e["row"] for e in body["errors"]] == [2, 3]
    assert body["errors"][0]["field"] == "name"
    assert _person_nos(_search(api, "SK")) == ["SK1"]


def test_duplicates_in_file_and_against_database_are_reported(
    api: ApiUser, new_person: Callable[..., Any]
) -> None:
    new_person(api, person_no="DB1")
    resp = _import(api, _csv("DB1,甲,staff,,,,,", "DF1,乙,staff,,,,,", "DF1,丙,staff,,,,,"))
    assert resp.status_code == 422
    assert [(e["row"], e["field"]) for e in resp.get_json()["errors"]] == [
        (1, "person_no"),
        (3, "person_no"),
    ]
    assert _search(api, "DF")["total"] == 0


def test_import_places_people_by_org_unit_code(api: ApiUser) -> None:
    api.post("/api/v1/org-units", json={"code": "ENG", "name": "Engineering"})
    resp = _import(api, _csv("OU1,甲,staff,ENG,,,,", "OU2,乙,staff,NOPE,,,,"))
    assert [(e["row"], e["field"]) for e in resp.get_json()["errors"]] == [(2, "org_unit_code")]


def test_xlsx_file_is_imported(api: ApiUser) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["person_no", "name", "identity_class", "valid_from"])
    sheet.append(["XL1", "表格一", "staff", None])
    sheet.append([20260002, "表格二", "student", None])  # numbers come back as text
    buf = io.BytesIO()
    book.save(buf)
    resp = _import(
        api,
        buf.getvalue(),
        ctype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["imported"] == 2
    assert _person_nos(_search(api, "20260002")) == ["20260002"]


def test_multipart_upload_is_imported(api: ApiUser) -> None:
    resp = api.post(
        "/api/v1/people/import",
        data={"file": (io.BytesIO(_csv("MP1,甲,staff,,,,,")), "people.csv")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 200, resp.get_json()
    assert _person_nos(_search(api, "MP")) == ["MP1"]


def test_dry_run_reports_without_importing(api: ApiUser) -> None:
    resp = _import(api, _csv("DR1,甲,staff,,,,,", "DR2,乙,staff,,,,,"), "?dry_run=true")
    assert resp.status_code == 200
    assert (resp.get_json()["rows"], resp.get_json()["imported"]) == (2, 0)
    assert _search(api, "DR")["total"] == 0


@pytest.mark.parametrize(
    "data",
    [b"", b"nom,prenom\nx,y\n", HEADER.encode() + b"\xff\xfe\n", b"PK\x03\x04broken-zip"],
    ids=["empty", "wrong header", "not utf-8", "broken xlsx"],
)
def test_unreadable_file_is_refused(
    api: ApiUser, expect_problem: Callable[..., Any], data: bytes
) -> None:
    resp = _import(api, data)
    assert 400 <= resp.status_code < 500
    expect_problem(resp, resp.status_code)


# --- photo ------------------------------------------------------------------------------------


def test_png_photo_is_stored_and_served(api: ApiUser, new_person: Callable[..., Any]) -> None:
    person = new_person(api)
    url = f"/api/v1/people/{person['id']}/photo"
    assert api.put(url, data=PNG, content_type="image/png").status_code == 204
    resp = api.get(url)
    assert (resp.status_code, resp.mimetype, resp.data) == (200, "image/png", PNG)


def test_person_without_photo_answers_404(
    api: ApiUser, new_person: Callable[..., Any], expect_problem: Callable[..., Any]
) -> None:
    person = new_person(api)
    expect_problem(api.get(f"/api/v1/people/{person['id']}/photo"), 404)


@pytest.mark.parametrize(
    ("data", "ctype", "status"),
    [
        (PNG, "image/gif", 400),
        (PNG, "application/json", 400),
        (JPEG, "image/png", 422),  # content does not match the declared type
        (b"GIF89a" + b"\x00" * 10, "image/jpeg", 422),
        (b"", "image/png", 422),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * (1024 * 1024), "image/png", 422),  # over 1 MiB
    ],
    ids=["gif type", "json type", "jpeg bytes as png", "gif bytes as jpeg", "empty", "too big"],
)
def test_wrong_photo_is_refused(
    api: ApiUser,
    new_person: Callable[..., Any],
    expect_problem: Callable[..., Any],
    data: bytes,
    ctype: str,
    status: int,
) -> None:
    person = new_person(api)
    url = f"/api/v1/people/{person['id']}/photo"
    expect_problem(api.put(url, data=data, content_type=ctype), status)
    assert api.get(url).status_code == 404


# --- deletion (four eyes) ---------------------------------------------------------------------


@pytest.fixture
def deletion(api: ApiUser, new_holder: Callable[..., Any]) -> dict[str, Any]:
    """A holder (person_no DEL1) whose deletion was requested by ``api``."""
    holder = new_holder(api, person_no="DEL1")
    resp = api.delete(f"/api/v1/people/{holder.person_id}")
    assert resp.status_code == 202, resp.get_json()
    return {"holder": holder, "approval": resp.get_json()["approval"]}


def test_delete_files_a_pending_approval_and_keeps_the_person(
    api: ApiUser, deletion: dict[str, Any]
) -> None:
    assert (deletion["approval"]["kind"], deletion["approval"]["status"]) == (
        "person.delete",
        "pending",
    )
    assert _person_nos(_search(api, "DEL1")) == ["DEL1"]


def test_requester_cannot_approve_their_own_deletion(
    api: ApiUser, deletion: dict[str, Any], expect_problem: Callable[..., Any]
) -> None:
    resp = api.post(f"/api/v1/approvals/{deletion['approval']['id']}/approve", json={})
    expect_problem(resp, 403)
    assert _search(api, "DEL1")["total"] == 1


def test_approved_deletion_removes_the_person_and_stops_their_card(
    api: ApiUser, colleague: ApiUser, deletion: dict[str, Any]
) -> None:
    holder = deletion["holder"]
    resp = colleague.post(
        f"/api/v1/approvals/{deletion['approval']['id']}/approve", json={"note": "left"}
    )
    assert resp.status_code == 200
    assert (resp.get_json()["status"], resp.get_json()["decided_by_name"]) == (
        "approved",
        colleague.username,
    )
    assert _search(api, "DEL1")["total"] == 0
    assert api.get(f"/api/v1/people/{holder.person_id}").status_code == 404
    blacklist = api.get("/api/v1/blacklist").get_json()["cards"]
    assert holder.card["card_no"] in blacklist


def test_rejected_deletion_keeps_the_person(
    api: ApiUser, colleague: ApiUser, deletion: dict[str, Any]
) -> None:
    resp = colleague.post(f"/api/v1/approvals/{deletion['approval']['id']}/reject", json={})
    assert resp.get_json()["status"] == "rejected"
    assert _search(api, "DEL1")["total"] == 1


def test_delete_with_the_same_idempotency_key_files_one_approval(
    api: ApiUser, new_person: Callable[..., Any]
) -> None:
    person = new_person(api)
    headers = {"Idempotency-Key": "del-once-1"}
    first = api.delete(f"/api/v1/people/{person['id']}", headers=headers).get_json()
    again = api.delete(f"/api/v1/people/{person['id']}", headers=headers).get_json()
    assert first["approval"]["id"] == again["approval"]["id"]
    assert api.get("/api/v1/approvals?status=pending").get_json()["total"] == 1
