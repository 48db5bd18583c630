"""Reports with export, operators and roles, tenant settings, menu and site switcher."""

from __future__ import annotations

import csv
import io

from openpyxl import load_workbook

from onecard.platform.actors import Actor
from onecard.platform.clock import utcnow
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import AccountTemplate, open_account
from onecard.platform.ledger.models import AccountType
from onecard.platform.ledger.posting import LineSpec, PostingRequest, post


def test_daily_top_up_report_and_exports(admin, person_via_console):
    pid = person_via_console(admin)
    admin.post(f"/console/accounts/person/{pid}/top-up", {"amount": "12.34", "channel": "cash"})
    admin.post(
        f"/console/accounts/person/{pid}/top-up",
        {"amount": "1", "channel": "bank", "bank_reference": "BR-1"},
    )
    html = admin.get("/console/reports?kind=top_ups&grain=day").get_data(as_text=True)
    assert "12.34" in html
    assert "report-chart-data" in html
    xlsx = admin.get("/console/reports/export.xlsx?kind=top_ups&grain=day")
    assert xlsx.status_code == 200
    sheet = load_workbook(io.BytesIO(xlsx.data)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[-1][1:] == (1, 12.34) or float(rows[-1][2]) == 12.34
    text = admin.get("/console/reports/export.csv?kind=top_ups&grain=month").data.decode(
        "utf-8-sig"
    )
    table = list(csv.reader(io.StringIO(text)))
    assert table[-1][-1] == "12.34"


def test_takings_per_merchant_account(admin, person_via_console, session_factory):
    pid = person_via_console(admin)
    admin.post(f"/console/accounts/person/{pid}/top-up", {"amount": "50", "channel": "cash"})
    now = utcnow()
    with session_factory() as s, tenant_scope(admin.tenant.id):
        shop = open_account(
            s,
            AccountTemplate(
                "canteen.merchant", AccountType.LIABILITY, "Liabilities:Merchants:1", "一食堂", None
            ),
            now=now,
        )
        purse = ops.holder_account(s, pid, ops.PURSE, now=now)
        post(
            s,
            PostingRequest(
                "canteen.sale", (LineSpec(purse.id, 800), LineSpec(shop.id, -800)), "sale-1"
            ),
            actor=Actor.system("t"),
            now=now,
        )
        s.commit()
    for grain in ("shift", "day", "month", "year"):
        html = admin.get(f"/console/reports?kind=takings&grain={grain}").get_data(as_text=True)
        assert "一食堂" in html, grain
        assert "8.00" in html, grain


def test_balances_report(admin, person_via_console):
    pid = person_via_console(admin)
    admin.post(f"/console/accounts/person/{pid}/top-up", {"amount": "7", "channel": "cash"})
    html = admin.get("/console/reports?kind=balances").get_data(as_text=True)
    assert "7.00" in html
    sheet = load_workbook(
        io.BytesIO(admin.get("/console/reports/export.xlsx?kind=balances").data)
    ).active
    assert sheet.max_row == 6


def test_balances_are_kept_a_minute_and_the_page_says_from_when(admin, person_via_console):
    pid = person_via_console(admin)
    top_up = {"amount": "7", "channel": "cash"}
    admin.post(f"/console/accounts/person/{pid}/top-up", top_up)
    first = admin.get("/console/reports?kind=balances").get_data(as_text=True)
    admin.post(f"/console/accounts/person/{pid}/top-up", top_up)
    again = admin.get("/console/reports?kind=balances").get_data(as_text=True)
    assert 'id="as-of"' in first
    assert "每分钟最多重新计算一次" in first
    assert "7.00" in again  # the first request's figures: the second top-up is not in yet
    assert "14.00" not in again


def test_a_snapshot_is_recomputed_once_it_is_a_minute_old(now):
    from datetime import timedelta

    from onecard.web.state import Snapshots

    snapshots, computed = Snapshots(), []

    def compute():
        computed.append(len(computed))
        return computed[-1]

    assert snapshots.get("k", now, compute) == (0, now)
    assert snapshots.get("k", now + timedelta(seconds=59), compute) == (0, now)
    later = now + timedelta(seconds=60)
    assert snapshots.get("k", later, compute) == (1, later)
    assert snapshots.get("other", later, compute) == (2, later)


def test_subsidy_use_report(admin, person_via_console):
    person_via_console(admin, person_no="SU1")
    admin.post(
        "/console/accounts/subsidies", {"batch_id": "r1", "lines": "SU1,3", "confirmed": "yes"}
    )
    html = admin.get(
        "/console/reports?kind=subsidy_use&grain=day", headers={"Accept-Language": "en"}
    ).get_data(True)
    assert "Granted" in html
    assert "3.00" in html


def test_reports_need_ledger_view(make_console_user):
    clerk = make_console_user(roles=("card_centre",))
    assert clerk.get("/console/reports").status_code == 403
    assert "/console/reports" not in clerk.get("/console/people").get_data(as_text=True)


def test_menu_follows_permissions(make_console_user):
    auditor = make_console_user(roles=("auditor",))
    html = auditor.get("/console/people").get_data(as_text=True)
    assert 'href="/console/audit"' in html
    assert 'href="/console/operators"' not in html
    assert 'href="/console/settings"' not in html


def test_create_operator_with_role_and_errors(admin):
    bad = admin.post("/console/operators/new", {"username": "x", "password": "short"})
    assert bad.status_code == 422
    ok = admin.post(
        "/console/operators/new",
        {"username": "clerk1", "password": "long-enough-password", "roles": "card_centre"},
    )
    assert ok.status_code == 303
    html = admin.get("/console/operators?q=clerk").get_data(as_text=True)
    assert "clerk1" in html
    assert "card_centre" in html


def test_deactivating_an_operator_is_confirmed(admin, make_console_user):
    other = make_console_user(tenant=admin.tenant, roles=("auditor",))
    html = admin.get(f"/console/operators?q={other.username}").get_data(as_text=True)
    op_id = html.split("<tbody>", 1)[1].split("/console/operators/", 1)[1].split('"', 1)[0]
    ask = admin.post(f"/console/operators/{op_id}", {"display_name": "x", "roles": "auditor"})
    assert "confirmed" in ask.get_data(as_text=True)
    admin.post(
        f"/console/operators/{op_id}", {"display_name": "x", "roles": "auditor", "confirmed": "yes"}
    )
    assert other.get("/console/people").status_code == 302  # logged out on next request


def test_create_role(admin):
    resp = admin.post(
        "/console/roles", {"name": "viewer", "permissions": ["people.view", "cards.view"]}
    )
    assert resp.status_code == 303
    assert "viewer" in admin.get("/console/roles").get_data(as_text=True)
    bad = admin.post("/console/roles", {"name": "v2", "permissions": ["no.such"]})
    assert bad.status_code == 422


def test_settings_threshold_and_menu_arrangement(admin):
    assert admin.post("/console/settings/threshold", {"threshold": "123.45"}).status_code == 303
    assert 'value="123.45"' in admin.get("/console/settings").get_data(as_text=True)
    form = {"pos_audit": "1", "pos_people": "2", "hidden": ["journal", "ledger"]}
    admin.post("/console/settings/menu", form)
    html = admin.get("/console/people").get_data(as_text=True)
    nav = html.split('<nav class="menu"', 1)[1].split("</nav>", 1)[0]
    assert nav.index("/console/audit") < nav.index("/console/people")
    assert "/console/journal" not in nav


def test_site_switcher_narrows_people(admin, person_via_console):
    for code in ("S1", "S2"):
        admin.post(
            "/console/settings/sites",
            {"code": code, "name": f"校区{code}", "timezone": "Asia/Shanghai"},
        )
    html = admin.get("/console/settings").get_data(as_text=True)
    assert "校区S1" in html
    settings = admin.get("/console/people").get_data(as_text=True)
    assert 'id="site-switch"' in settings
    site_id = (
        settings.split('id="site-switch"', 1)[1].split('<option value="', 2)[2].split('"', 1)[0]
    )
    admin.post("/console/settings/org-units", {"code": "U1", "name": "一系", "site_id": site_id})
    unit_html = admin.get("/console/people/new").get_data(as_text=True)
    unit_id = unit_html.split("一系", 1)[0].rsplit('<option value="', 1)[1].split('"', 1)[0]
    person_via_console(admin, person_no="INSITE1", org_unit_id=unit_id)
    person_via_console(admin, person_no="NOSITE1")
    admin.post("/console/switch/site", {"site_id": site_id, "next": "/console/people"})
    narrowed = admin.get("/console/people").get_data(as_text=True).split("<tbody>", 1)[1]
    assert "INSITE1" in narrowed
    assert "NOSITE1" not in narrowed
    admin.post("/console/switch/site", {"site_id": ""})
    assert "NOSITE1" in admin.get("/console/people").get_data(as_text=True)


def test_settings_need_tenant_manage(make_console_user):
    finance = make_console_user(roles=("finance",))
    assert finance.get("/console/settings").status_code == 403
    assert finance.get("/console/operators").status_code == 403
