"""The card centre's day in a real browser, in Chinese and in English.

Log in (one operator with a password, one with TOTP), create a person, issue a card, top up,
report the card lost, refund with four-eyes approval by the second operator, export the daily
report and read the XLSX with openpyxl. Screenshots of the main pages go to
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import contextlib
import io
import re
from typing import Any

import pyotp
import pytest
from openpyxl import load_workbook
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from onecard.platform.actors import Actor
from onecard.platform.authz.services import create_operator, enable_totp
from onecard.platform.clock import utcnow
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.tenants.services import create_tenant, update_tenant_settings
from onecard.testing.fixtures import unique

PASSWORD = "long-enough-password-1"
TEXT = {
    "zh": {"lost": "已挂失", "pending": "待审批", "approved": "申请已批准", "people": "人员"},
    "en": {
        "lost": "lost",
        "pending": "pending",
        "approved": "Request approved",
        "people": "People",
    },
}


@pytest.fixture
def staff(app, session_factory) -> dict[str, Any]:
    """A tenant with a clerk (password) and a supervisor (password + TOTP); refunds over 10
    yuan need a second operator."""
    now = utcnow()
    system = Actor.system("browser-tests")
    policy = app.extensions["onecard"].policy
    with session_factory() as s:
        tenant = create_tenant(s, unique("web"), "示范大学 Demo University", actor=system, now=now)
        with tenant_scope(tenant.id):
            create_operator(
                s,
                "clerk",
                PASSWORD,
                actor=system,
                now=now,
                policy=policy,
                display_name="柜员 Clerk",
                roles=["tenant_admin"],
            )
            boss = create_operator(
                s,
                "boss",
                PASSWORD,
                actor=system,
                now=now,
                policy=policy,
                display_name="主管 Supervisor",
                roles=["tenant_admin"],
            )
            uri = enable_totp(s, boss, actor=system, now=now, box=app.extensions["onecard"].box)
            update_tenant_settings(
                s, tenant, {"approval_threshold_fen": 1000}, actor=system, now=now
            )
        s.commit()
        slug = tenant.slug
    return {"tenant": slug, "totp": re.search(r"secret=([A-Z2-7]+)", uri).group(1)}


def _login(page, base: str, tenant: str, username: str, totp_secret: str | None = None) -> None:
    page.goto(f"{base}/console/login")
    page.fill("#f-tenant", tenant)
    page.fill("#f-username", username)
    page.fill("#f-password", PASSWORD)
    if totp_secret:
        page.click("details summary")
        page.fill("#f-totp", pyotp.TOTP(totp_secret).now())
    page.click("form button.primary")
    page.wait_for_url(re.compile(r"/console/people"))


def _confirm(page) -> None:
    page.wait_for_selector("section.confirm")
    page.click("section.confirm button.danger")


def _shot(page, screenshots, lang: str, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{lang}-{name}.png"), full_page=True)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_card_centre_day(lang, browser, live_server, staff, screenshots):
    base, t = live_server, TEXT[lang]
    # Chinese comes from the browser's Accept-Language; English from the console's switch.
    context = browser.new_context(
        locale="zh-CN", accept_downloads=True, viewport={"width": 1360, "height": 900}
    )
    page = context.new_page()
    page.goto(f"{base}/console/login")
    if lang == "en":
        page.click("button[name=lang][value=en]")
    _shot(page, screenshots, lang, "01-login")
    _login(page, base, staff["tenant"], "clerk")
    assert page.locator("nav.menu").inner_text().startswith(t["people"])

    # A person, then a card with a 10 yuan deposit.
    number = unique("B")
    page.click("a[href$='/console/people/new']")
    page.fill("#f-person_no", number)
    page.fill("#f-name", "测试 Tester")
    page.select_option("#f-identity_class", "student")
    page.fill("#f-phone", "13800138000")
    page.click("form.form button.primary")
    page.wait_for_url(re.compile(r"/console/people/\d+$"))
    page.click("a[href*='/cards/new']")
    page.fill("#f-card_no", number + "C1")
    page.fill("#f-deposit", "10")
    page.click("form.form button.primary")
    page.wait_for_url(re.compile(r"/console/cards/\d+$"))
    card_url = page.url

    # Top up 100 yuan at the cash desk.
    page.click(f"a[href$='/console/people/{_person_id(page)}']")
    _shot(page, screenshots, lang, "03-person")
    page.click("a[href*='/console/accounts/person/']")
    page.fill("#f-amount", "100")
    page.click("form[action$='/top-up'] button")
    page.wait_for_selector("[data-balance='holder.purse']")
    assert page.inner_text("[data-balance='holder.purse']") == "100.00"

    # Report the card lost (confirm step), see it on the blacklist.
    page.goto(card_url)
    page.click("form[action$='/report-loss'] button")
    _shot(page, screenshots, lang, "04-confirm")
    _confirm(page)
    page.wait_for_selector(".badge.s-lost")
    assert t["lost"] in page.inner_text(".badge.s-lost")
    _shot(page, screenshots, lang, "05-card")

    # Refund 20 yuan: over the threshold, so it waits for the supervisor.
    page.click(f"a[href$='/console/people/{_person_id(page)}']")
    page.click("a[href*='/console/accounts/person/']")
    holder_url = page.url
    page.fill("#f-refund_amount", "20")
    page.click("form[action$='/refund'] button")
    _confirm(page)
    page.wait_for_selector(".flash.success")
    assert page.inner_text("[data-balance='holder.purse']") == "100.00"
    _shot(page, screenshots, lang, "06-accounts")

    # The supervisor logs in with TOTP and approves.
    boss_ctx = browser.new_context(
        locale="zh-CN" if lang == "zh" else "en-US", viewport={"width": 1360, "height": 900}
    )
    boss = boss_ctx.new_page()
    _login(boss, base, staff["tenant"], "boss", staff["totp"])
    boss.click("a[href$='/console/approvals']")
    assert t["pending"] in boss.inner_text("table.grid")
    _shot(boss, screenshots, lang, "07-approvals")
    boss.click("form[action*='/approve'] button")
    _confirm(boss)
    boss.wait_for_selector(".flash.success")
    assert t["approved"] in boss.inner_text(".flash.success")
    boss_ctx.close()
    page.goto(holder_url)
    assert page.inner_text("[data-balance='holder.purse']") == "80.00"

    # The daily report: chart drawn, XLSX exported and read back.
    page.click("a[href$='/console/reports']")
    page.select_option("#kind", "top_ups")
    page.select_option("#grain", "day")
    page.click("form.filters button")
    page.wait_for_selector("body[data-chart-ready=yes]")
    _shot(page, screenshots, lang, "08-reports")
    with page.expect_download() as info:
        page.click("#export-xlsx")
    download = info.value
    with open(download.path(), "rb") as fh:
        sheet = load_workbook(io.BytesIO(fh.read())).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][0] in ("期间", "Period")
    assert float(rows[-1][1]) >= 100.0  # the total row holds at least today's 100 yuan

    # The other main pages, for the record.
    page.goto(f"{base}/console/people")
    _shot(page, screenshots, lang, "02-people")
    page.goto(f"{base}/console/audit?verify=1")
    page.wait_for_selector("#chain-status")
    _shot(page, screenshots, lang, "09-audit")
    page.goto(f"{base}/console/settings")
    _shot(page, screenshots, lang, "10-settings")
    page.goto(f"{base}/console/operators")
    _shot(page, screenshots, lang, "11-operators")
    context.close()


def _person_id(page) -> str:
    href = page.get_attribute("a[href*='/console/people/']:not([href$='/new'])", "href") or ""
    return href.rstrip("/").rsplit("/", 1)[-1]


def _focused(page: Any, expected: str) -> str:
    """The id of the focused element, read once ``expected`` has it or after 5 s: the browser
    applies ``autofocus`` at a rendering step after the load event that navigation waits for."""
    with contextlib.suppress(PlaywrightTimeoutError):
        page.wait_for_function(f"document.activeElement.id === {expected!r}", timeout=5000)
    return str(page.evaluate("document.activeElement.id"))


def test_forms_are_keyboard_usable(browser, live_server, staff):
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    page.goto(f"{live_server}/console/login")
    assert _focused(page, "f-tenant") == "f-tenant"  # autofocus
    page.keyboard.type(staff["tenant"])
    page.keyboard.press("Tab")
    page.keyboard.type("clerk")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/console/people"))
    assert _focused(page, "q") == "q"  # the search box comes first
    page.keyboard.type("zzz-nobody")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"q=zzz-nobody"))
    assert page.locator("td.empty").count() == 1
    context.close()
