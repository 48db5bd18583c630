"""Canteen's console pages: merchants and POS, daily settlement with its exceptions,
reconciliation cases; mounted from the module's ``onecard_blueprints``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from tests.web.console.conftest import ConsoleUser

from onecard.modules.canteen import setup
from onecard.modules.canteen.models import ReconCase, Sale, Settlement
from onecard.modules.canteen.rules import Mode
from onecard.platform.actors import Actor
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices.services import NewDevice, add_device
from onecard.platform.tenants.services import create_site, set_module_enabled
from onecard.testing.fixtures import unique

DAY = date(2026, 9, 1)


@dataclass
class Canteen:
    """A tenant with canteen switched on: one merchant with one fixed-price POS."""

    user: ConsoleUser
    merchant_id: int
    merchant_code: str
    pos_id: int
    device_id: str


@pytest.fixture
def canteen(
    make_console_user: Callable[..., ConsoleUser],
    session_factory: sessionmaker[Session],
    now: datetime,
) -> Canteen:
    user = make_console_user()
    actor = Actor.system("tests")
    with session_factory() as s, tenant_scope(user.tenant.id):
        set_module_enabled(s, "canteen", True, actor=actor, now=now)
        site = create_site(s, unique("S"), "North campus", "Asia/Shanghai", actor=actor, now=now)
        merchant = setup.create_merchant(s, unique("M"), "一号窗口", site, actor=actor, now=now)
        new = NewDevice(device_id=unique("pos-").lower(), kind="pos", module="canteen")
        device, _pw = add_device(s, new, actor=actor, now=now)
        prices = {"lunch": 1200}
        pos = setup.add_pos(
            s, merchant, device, mode=Mode.FIXED, fixed_prices=prices, actor=actor, now=now
        )
        s.commit()
        return Canteen(user, merchant.id, merchant.code, pos.id, pos.device_id)


def _add(session_factory: sessionmaker[Session], c: Canteen, row: object) -> int:
    with session_factory() as s, tenant_scope(c.user.tenant.id):
        s.add(row)
        s.commit()
        return int(row.id)  # type: ignore[attr-defined]


def _unposted_sale(c: Canteen, now: datetime) -> Sale:
    """An uploaded record whose MAC failed: recorded as a sale, never posted."""
    return Sale(
        key=unique("rec:"),
        merchant_id=c.merchant_id,
        pos_id=c.pos_id,
        card_no=unique("C"),
        mode="fixed",
        source="offline",
        business_day=DAY,
        list_fen=900,
        discount_fen=0,
        amount_fen=900,
        flags=["bad_mac"],
        occurred_at=now,
        recorded_at=now,
    )


def test_menu_shows_canteen_to_an_operator_who_may_view_it(canteen):
    page = canteen.user.get("/console/canteen/").get_data(as_text=True)

    assert 'href="/console/canteen/"' in page


def test_menu_hides_canteen_from_an_operator_without_canteen_view(canteen, make_console_user):
    clerk = make_console_user(tenant=canteen.user.tenant, roles=("card_centre",))

    assert "/console/canteen/" not in clerk.get("/console/profile").get_data(as_text=True)
    assert clerk.get("/console/canteen/").status_code == 403


def test_index_lists_a_merchant_and_its_pos(canteen):
    resp = canteen.user.get("/console/canteen/")

    page = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert f'data-merchant="{canteen.merchant_code}"' in page
    assert f'data-pos="{canteen.device_id}"' in page


def test_settling_a_day_shows_the_statement_with_its_exceptions(canteen, session_factory, now):
    _add(session_factory, canteen, _unposted_sale(canteen, now))
    form = {"merchant_id": str(canteen.merchant_id), "day": DAY.isoformat()}

    asked = canteen.user.post("/console/canteen/settlement", form)
    done = canteen.user.post("/console/canteen/settlement", {**form, "confirmed": "yes"})
    page = canteen.user.get(done.headers["Location"]).get_data(as_text=True)

    assert asked.status_code == 200
    assert "confirmed" in asked.get_data(as_text=True)
    assert done.status_code == 303
    assert 'data-kind="record_without_posting"' in page
    assert 'data-kind="pos_report_missing"' in page
    with session_factory() as s, tenant_scope(canteen.user.tenant.id):
        statement = s.scalar(
            select(Settlement).where(Settlement.merchant_id == canteen.merchant_id)
        )
        assert statement is not None
        assert statement.status == "exceptions"


def test_settling_a_case_closes_it(canteen, session_factory, now):
    case = ReconCase(
        kind="bad_mac",
        card_no=unique("C"),
        business_day=DAY,
        status="open",
        sale_ids=[],
        detail={},
        opened_at=now,
    )
    case_id = _add(session_factory, canteen, case)
    assert f'data-case="{case_id}"' in canteen.user.get("/console/canteen/cases").get_data(
        as_text=True
    )

    resp = canteen.user.post(f"/console/canteen/cases/{case_id}/settle", {"confirmed": "yes"})

    assert resp.status_code == 303
    with session_factory() as s, tenant_scope(canteen.user.tenant.id):
        settled = s.get(ReconCase, case_id)
        assert settled is not None
        assert settled.status == "settled"


def test_a_chinese_console_shows_chinese_labels(canteen):
    page = canteen.user.get("/console/canteen/", headers={"Accept-Language": "zh-CN"})

    assert "收款终端" in page.get_data(as_text=True)


def test_a_post_without_the_csrf_token_is_refused(canteen):
    form = {"merchant_id": str(canteen.merchant_id), "day": DAY.isoformat(), "confirmed": "yes"}

    resp = canteen.user.client.post("/console/canteen/settlement", data=form)

    assert resp.status_code == 400


def test_module_blueprints_are_mounted_from_the_hook(app):
    assert "canteen.index" in app.view_functions
    assert app.url_map.bind("").match("/console/canteen/")[0] == "canteen.index"


def test_a_payout_of_an_empty_statement_is_refused_in_the_console_language(
    canteen, session_factory
):
    form = {"merchant_id": str(canteen.merchant_id), "day": DAY.isoformat(), "confirmed": "yes"}
    canteen.user.post("/console/canteen/settlement", form)
    with session_factory() as s, tenant_scope(canteen.user.tenant.id):
        statement_id = s.scalar(
            select(Settlement.id).where(Settlement.merchant_id == canteen.merchant_id)
        )

    resp = canteen.user.post(
        f"/console/canteen/settlement/{statement_id}/payout",
        {"confirmed": "yes"},
        headers={"Accept-Language": "zh-CN"},
        follow_redirects=True,
    )

    assert "该结算单没有可付款的金额" in resp.get_data(as_text=True)


def test_an_exception_row_shows_the_amounts_each_source_has():
    from onecard.modules.canteen.console import exception_row

    unexplained = {"kind": "posting_without_record", "entry_id": 7, "ledger_fen": 300}
    mismatch = {"kind": "pos_total_mismatch", "device": "pos-1", "pos_count": 2, "pos_fen": 2400}

    assert exception_row(unexplained) == {
        "kind": "posting_without_record",
        "ref": "E7",
        "records_fen": None,
        "ledger_fen": 300,
        "pos_fen": None,
    }
    assert exception_row({**mismatch, "records_count": 1, "records_fen": 1500})["ref"] == "pos-1"


def test_a_day_whose_pos_slip_matches_the_records_and_the_ledger_is_balanced(
    canteen, session_factory, now
):
    """The cashier types in the POS's end-of-day slip; with no sales, 0 sales of 0.00 yuan."""
    form = {"merchant_id": str(canteen.merchant_id), "day": DAY.isoformat(), "confirmed": "yes"}
    slip = {f"count_{canteen.pos_id}": "0", f"amount_{canteen.pos_id}": "0.00"}

    done = canteen.user.post("/console/canteen/settlement", {**form, **slip})

    assert done.status_code == 303
    with session_factory() as s, tenant_scope(canteen.user.tenant.id):
        statement = s.scalar(
            select(Settlement).where(Settlement.merchant_id == canteen.merchant_id)
        )
        assert statement is not None
        assert (statement.status, statement.exceptions) == ("balanced", [])
        assert statement.pos_totals == {canteen.device_id: {"count": 0, "amount_fen": 0}}


def test_a_slip_that_does_not_match_is_an_exception_and_a_bad_slip_is_refused(
    canteen, session_factory, now
):
    _add(session_factory, canteen, _unposted_sale(canteen, now))
    form = {"merchant_id": str(canteen.merchant_id), "day": DAY.isoformat(), "confirmed": "yes"}

    refused = canteen.user.post(
        "/console/canteen/settlement", {**form, f"count_{canteen.pos_id}": "two"}
    )
    with session_factory() as s, tenant_scope(canteen.user.tenant.id):
        assert s.scalar(select(Settlement)) is None  # nothing written for a bad slip
    slip = {f"count_{canteen.pos_id}": "1", f"amount_{canteen.pos_id}": "12.5"}
    done = canteen.user.post("/console/canteen/settlement", {**form, **slip})
    page = canteen.user.get(done.headers["Location"]).get_data(as_text=True)

    assert refused.status_code == 303
    assert 'data-kind="pos_total_mismatch"' in page  # the slip says 12.50, the records 9.00
    assert 'data-kind="pos_report_missing"' not in page
