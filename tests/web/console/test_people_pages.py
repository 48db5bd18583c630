"""People pages: search with server-side pages, create/edit with field errors, photo, import."""

from __future__ import annotations

import io
import time

import pytest
from openpyxl import Workbook

from onecard.platform.actors import Actor
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.people.importer import import_people


def test_create_person_and_see_detail(admin, person_via_console):
    pid = person_via_console(admin, name="李四", phone="13800000000")
    html = admin.get(f"/console/people/{pid}").get_data(as_text=True)
    assert "李四" in html
    assert "13800000000" in html


def test_create_shows_field_errors_from_pydantic_and_services(admin, person_via_console):
    resp = admin.post(
        "/console/people/new", {"person_no": "bad no!", "name": "", "identity_class": "staff"}
    )
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert 'id="e-person_no"' in html
    assert 'id="e-name"' in html
    pid = person_via_console(admin, person_no="DUP1")
    assert pid
    dup = admin.post(
        "/console/people/new", {"person_no": "DUP1", "name": "x", "identity_class": "staff"}
    )
    assert dup.status_code == 422
    assert "人员编号 DUP1 已存在" in dup.get_data(as_text=True)


def test_html_is_escaped(admin, person_via_console):
    pid = person_via_console(admin, name="<script>alert(1)</script>")
    html = admin.get(f"/console/people/{pid}").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html


def test_edit_person(admin, person_via_console):
    pid = person_via_console(admin)
    resp = admin.post(f"/console/people/{pid}/edit", {"name": "王五", "identity_class": "student"})
    assert resp.status_code == 303
    html = admin.get(f"/console/people/{pid}").get_data(as_text=True)
    assert "王五" in html


def test_edit_reports_bad_dates(admin, person_via_console):
    pid = person_via_console(admin)
    resp = admin.post(
        f"/console/people/{pid}/edit",
        {
            "name": "x",
            "identity_class": "staff",
            "valid_from": "2026-05-01",
            "valid_until": "2026-01-01",
        },
    )
    assert resp.status_code == 422
    assert "有效期止早于有效期起" in resp.get_data(as_text=True)


def test_search_pages_through_many_people(admin, session_factory, now):
    rows = [
        {"person_no": f"S{n:05d}", "name": f"学生{n}", "identity_class": "student"}
        for n in range(1, 2501)
    ]
    with session_factory() as s, tenant_scope(admin.tenant.id):
        import_people(s, rows, actor=Actor.system("tests"), now=now)
        s.commit()
    first = admin.get("/console/people?limit=50").get_data(as_text=True)
    assert "S00001" in first
    assert "S00051" not in first
    assert "2500" in first
    page3 = admin.get("/console/people?limit=50&offset=100").get_data(as_text=True)
    assert "S00101" in page3
    assert "S00100" not in page3
    found = admin.get("/console/people?q=S0249").get_data(as_text=True)
    assert "S02490" in found
    assert "S00001" not in found


def test_photo_upload_checks_content(admin, person_via_console):
    pid = person_via_console(admin)
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 100
    resp = admin.post(
        f"/console/people/{pid}/photo",
        {"photo": (io.BytesIO(png), "me.png")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 303
    assert admin.get(f"/console/people/{pid}/photo").data == png
    bad = admin.post(
        f"/console/people/{pid}/photo",
        {"photo": (io.BytesIO(b"GIF89a"), "x.gif")},
        content_type="multipart/form-data",
        follow_redirects=True,
    )
    assert "JPEG" in bad.get_data(as_text=True)


def _wait(admin, location):
    for _ in range(100):
        status = admin.get(location + "/status").get_json()
        if status["done"]:
            return status
        time.sleep(0.05)
    pytest.fail("import did not finish")


def test_import_reports_row_errors_and_imports_nothing(admin):
    csv = "person_no,name,identity_class\nI1,甲,staff\nI2,,staff\nI3,丙,alien\n"
    resp = admin.post(
        "/console/people/import",
        {"file": (io.BytesIO(csv.encode()), "people.csv")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 303
    location = resp.headers["Location"]
    status = _wait(admin, location)
    assert status["error_count"] == 2
    assert status["imported"] == 0
    html = admin.get(location).get_data(as_text=True)
    assert "identity_class" in html
    assert '<td class="num">3</td>' in html


def test_import_xlsx_with_skip_bad_rows(admin):
    book = Workbook()
    sheet = book.active
    sheet.append(["person_no", "name", "identity_class"])
    sheet.append(["X1", "甲", "staff"])
    sheet.append(["X2", "乙", "nope"])
    buf = io.BytesIO()
    book.save(buf)
    buf.seek(0)
    resp = admin.post(
        "/console/people/import",
        {"file": (buf, "people.xlsx"), "skip_bad_rows": "yes"},
        content_type="multipart/form-data",
    )
    status = _wait(admin, resp.headers["Location"])
    assert status["imported"] == 1
    assert status["percent"] == 100
    assert "X1" in admin.get("/console/people?q=X1").get_data(as_text=True)


def test_import_job_is_private_to_its_operator(admin, colleague_admin):
    resp = admin.post(
        "/console/people/import",
        {"file": (io.BytesIO(b"person_no,name,identity_class\nJ1,a,staff\n"), "p.csv")},
        content_type="multipart/form-data",
    )
    location = resp.headers["Location"]
    _wait(admin, location)
    assert colleague_admin.get(location).status_code == 404


def test_people_pages_need_permission(make_console_user):
    auditor = make_console_user(roles=("auditor",))
    assert auditor.get("/console/people").status_code == 200
    resp = auditor.get("/console/people/new")
    assert resp.status_code == 403
    assert auditor.get("/console/people/import").status_code == 403


def test_delete_person_needs_confirmation_then_approval(admin, colleague_admin, person_via_console):
    pid = person_via_console(admin)
    ask = admin.post(f"/console/people/{pid}/delete")
    assert ask.status_code == 200
    assert 'value="yes"' in ask.get_data(as_text=True)
    done = admin.post(f"/console/people/{pid}/delete", {"confirmed": "yes"})
    assert done.status_code == 303
    queue = colleague_admin.get("/console/approvals").get_data(as_text=True)
    assert "person.delete" in queue or "删除人员" in queue
