"""Cards, accounts, approvals, journal and audit pages: the card-centre counter's day."""

from __future__ import annotations

from onecard.platform.actors import Actor
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.tenants.models import Tenant
from onecard.platform.tenants.services import update_tenant_settings


def _holder_html(user, pid):
    return user.get(f"/console/accounts/person/{pid}").get_data(as_text=True)


def test_issue_card_with_deposit_and_print_receipt(admin, person_via_console, card_via_console):
    pid = person_via_console(admin)
    cid = card_via_console(admin, pid, deposit="20.00")
    html = admin.get(f"/console/cards/{cid}").get_data(as_text=True)
    assert "20.00" in html
    receipt = admin.get(f"/console/cards/{cid}/receipt").get_data(as_text=True)
    assert "20.00" in receipt
    assert "data-print" in receipt


def test_issue_card_field_errors(admin, person_via_console):
    pid = person_via_console(admin)
    resp = admin.post(f"/console/people/{pid}/cards/new", {"card_no": "x", "deposit": "1.234"})
    assert resp.status_code == 422
    assert 'id="e-deposit"' in resp.get_data(as_text=True)


def test_report_loss_is_confirmed_then_blacklisted(admin, person_via_console, card_via_console):
    cid = card_via_console(admin, person_via_console(admin))
    ask = admin.post(f"/console/cards/{cid}/report-loss")
    assert ask.status_code == 200
    assert "confirmed" in ask.get_data(as_text=True)
    assert "active" in admin.get("/console/cards?status=active").get_data(as_text=True)
    done = admin.post(f"/console/cards/{cid}/report-loss", {"confirmed": "yes"})
    assert done.status_code == 303
    html = admin.get(f"/console/cards/{cid}", headers={"Accept-Language": "en"}).get_data(True)
    assert "s-lost" in html
    assert "version 1" in html


def test_freeze_unfreeze_needs_second_operator(
    admin, colleague_admin, person_via_console, card_via_console
):
    cid = card_via_console(admin, person_via_console(admin))
    admin.post(f"/console/cards/{cid}/freeze", {"confirmed": "yes", "reason": "dispute"})
    admin.post(f"/console/cards/{cid}/unfreeze", {"confirmed": "yes"})
    queue = admin.get("/console/approvals").get_data(as_text=True)
    assert "Another operator must decide" in queue or "须由另一名操作员审批" in queue
    approval_id = (
        queue.split("/console/approvals/", 1)[1].split("/", 1)[0]
        if ("/console/approvals/" in queue)
        else None
    )
    assert approval_id is None  # the requester gets no decide buttons
    other = colleague_admin.get("/console/approvals").get_data(as_text=True)
    approval_id = other.split("/console/approvals/", 1)[1].split("/", 1)[0]
    ok = colleague_admin.post(f"/console/approvals/{approval_id}/approve", {"confirmed": "yes"})
    assert ok.status_code == 303
    assert "s-active" in admin.get(f"/console/cards/{cid}").get_data(as_text=True)


def test_requester_cannot_approve_own_request_even_by_url(
    admin, person_via_console, card_via_console
):
    cid = card_via_console(admin, person_via_console(admin))
    admin.post(f"/console/cards/{cid}/report-loss", {"confirmed": "yes"})
    admin.post(f"/console/cards/{cid}/unfreeze", {"confirmed": "yes"})
    html = admin.get("/console/approvals").get_data(as_text=True)
    approval_id = html.split('<td class="num">', 1)[1].split("<", 1)[0]
    resp = admin.post(
        f"/console/approvals/{approval_id}/approve", {"confirmed": "yes"}, follow_redirects=True
    )
    assert "申请人不能审批自己的申请" in resp.get_data(as_text=True)


def test_replace_card(admin, person_via_console, card_via_console):
    cid = card_via_console(admin, person_via_console(admin), deposit="10")
    resp = admin.post(
        f"/console/cards/{cid}/replace", {"new_card_no": "NEW12345", "confirmed": "yes"}
    )
    assert resp.status_code == 303
    html = admin.get(resp.headers["Location"]).get_data(as_text=True)
    assert "NEW12345" in html
    assert "10.00" in html


def test_top_up_refund_and_statement(admin, person_via_console, card_via_console):
    pid = person_via_console(admin)
    card_via_console(admin, pid)
    assert (
        admin.post(
            f"/console/accounts/person/{pid}/top-up", {"amount": "100.50", "channel": "cash"}
        ).status_code
        == 303
    )
    assert 'data-balance="holder.purse">100.50' in _holder_html(admin, pid)
    ask = admin.post(f"/console/accounts/person/{pid}/refund", {"refund_amount": "10"})
    assert "confirmed" in ask.get_data(as_text=True)
    done = admin.post(
        f"/console/accounts/person/{pid}/refund", {"refund_amount": "10", "confirmed": "yes"}
    )
    assert done.status_code == 303
    html = _holder_html(admin, pid)
    assert 'data-balance="holder.purse">90.50' in html
    assert "refund.cash" in html


def test_top_up_repeated_request_id_posts_once(admin, person_via_console):
    pid = person_via_console(admin)
    form = {"amount": "5", "channel": "cash", "request_id": "abcdef0123456789"}
    admin.post(f"/console/accounts/person/{pid}/top-up", form)
    admin.post(f"/console/accounts/person/{pid}/top-up", form)
    assert 'data-balance="holder.purse">5.00' in _holder_html(admin, pid)


def test_money_errors_are_shown_on_the_field(admin, person_via_console):
    pid = person_via_console(admin)
    bad = admin.post(f"/console/accounts/person/{pid}/top-up", {"amount": "1.001"})
    assert bad.status_code == 422
    assert 'id="e-amount"' in bad.get_data(as_text=True)
    short = admin.post(
        f"/console/accounts/person/{pid}/refund", {"refund_amount": "5", "confirmed": "yes"}
    )
    assert short.status_code == 422
    assert 'id="e-refund_amount"' in short.get_data(as_text=True)


def test_large_refund_waits_for_approval(
    admin, colleague_admin, person_via_console, session_factory, now
):
    with session_factory() as s, tenant_scope(admin.tenant.id):
        tenant = s.get(Tenant, admin.tenant.id)
        update_tenant_settings(
            s, tenant, {"approval_threshold_fen": 1000}, actor=Actor.system("t"), now=now
        )
        s.commit()
    pid = person_via_console(admin)
    admin.post(f"/console/accounts/person/{pid}/top-up", {"amount": "50", "channel": "cash"})
    admin.post(
        f"/console/accounts/person/{pid}/refund", {"refund_amount": "20", "confirmed": "yes"}
    )
    assert 'data-balance="holder.purse">50.00' in _holder_html(admin, pid)
    other = colleague_admin.get("/console/approvals").get_data(as_text=True)
    approval_id = other.split("/console/approvals/", 1)[1].split("/", 1)[0]
    colleague_admin.post(f"/console/approvals/{approval_id}/approve", {"confirmed": "yes"})
    assert 'data-balance="holder.purse">30.00' in _holder_html(admin, pid)


def test_return_card_pays_deposit_and_balance(admin, person_via_console, card_via_console):
    pid = person_via_console(admin)
    cid = card_via_console(admin, pid, deposit="20")
    admin.post(f"/console/accounts/person/{pid}/top-up", {"amount": "30", "channel": "cash"})
    ask = admin.post(f"/console/cards/{cid}/return")
    assert "50.00" in ask.get_data(as_text=True)
    done = admin.post(f"/console/cards/{cid}/return", {"confirmed": "yes"})
    assert done.headers["Location"].endswith(f"/console/cards/{cid}/receipt")
    receipt = admin.get(done.headers["Location"]).get_data(as_text=True)
    assert "20.00" in receipt
    assert "30.00" in receipt


def test_subsidy_batch_preview_then_post(admin, person_via_console):
    a = person_via_console(admin, person_no="SUBA1")
    person_via_console(admin, person_no="SUBB1")
    lines = "SUBA1,10\nSUBB1,5.5\n"
    preview = admin.post("/console/accounts/subsidies", {"batch_id": "b1", "lines": lines})
    html = preview.get_data(as_text=True)
    assert "15.50" in html
    assert 'data-balance="holder.subsidy">0.00' in _holder_html(admin, a)
    bad = admin.post("/console/accounts/subsidies", {"batch_id": "b1", "lines": "NOPE,1\n"})
    assert bad.status_code == 422
    assert "NOPE" in bad.get_data(as_text=True)
    admin.post(
        "/console/accounts/subsidies", {"batch_id": "b1", "lines": lines, "confirmed": "yes"}
    )
    admin.post(
        "/console/accounts/subsidies", {"batch_id": "b1", "lines": lines, "confirmed": "yes"}
    )
    assert 'data-balance="holder.subsidy">10.00' in _holder_html(admin, a)


def test_finance_cannot_issue_cards_and_auditor_cannot_top_up(
    admin, make_console_user, person_via_console
):
    pid = person_via_console(admin)
    finance = make_console_user(tenant=admin.tenant, roles=("finance",))
    assert finance.get(f"/console/people/{pid}/cards/new").status_code == 403
    auditor = make_console_user(tenant=admin.tenant, roles=("auditor",))
    resp = auditor.post(f"/console/accounts/person/{pid}/top-up", {"amount": "1"})
    assert resp.status_code == 403
    assert 'action="/console/accounts/person' not in _holder_html(auditor, pid)


def test_other_tenants_people_are_not_found(admin, make_console_user, person_via_console):
    pid = person_via_console(admin)
    stranger = make_console_user()
    assert stranger.get(f"/console/people/{pid}").status_code == 404


def test_journal_and_audit_with_chain_verification(admin, person_via_console):
    pid = person_via_console(admin)
    admin.post(f"/console/accounts/person/{pid}/top-up", {"amount": "1", "channel": "cash"})
    journal = admin.get("/console/journal?code=topup.cash").get_data(as_text=True)
    assert "Liabilities:Holders" in journal
    audit = admin.get("/console/audit?verify=1", headers={"Accept-Language": "en"}).get_data(True)
    assert "Chain verified" in audit
    assert "person.created" in audit
    filtered = admin.get("/console/audit?type=ledger.top_up").get_data(as_text=True)
    assert "person.created" not in filtered


def test_card_list_pagination(admin, person_via_console, card_via_console):
    pid = person_via_console(admin)
    for n in range(5):
        card_via_console(admin, pid, card_no=f"PG{n:04d}")
    html = admin.get("/console/cards?card_no=PG&limit=2").get_data(as_text=True)
    assert html.count('href="/console/cards/') == 2
    assert 'rel="next"' in html
    last = admin.get("/console/cards?card_no=PG&limit=2&offset=4").get_data(as_text=True)
    assert 'rel="next"' not in last
