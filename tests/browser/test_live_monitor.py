"""The live monitor in a real browser: a tap decided by the platform shows up without a reload.

The tap is decided the way the bridge does it (``taps.decide`` on a registered device, then
commit); the web process's poller pushes it over Socket.IO to the operator's tenant room. An
operator of another tenant watching at the same time sees nothing of it.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from onecard.device_agents.protocol.codes import CredentialKind
from onecard.device_agents.protocol.messages import Credential, TapRequest
from onecard.platform.actors import Actor
from onecard.platform.authz.services import create_operator
from onecard.platform.cards.lifecycle import NewCard, issue_card
from onecard.platform.clock import utcnow
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices import services, taps
from onecard.platform.people.schemas import PersonCreate
from onecard.platform.people.services import create_person
from onecard.platform.tenants.services import create_tenant
from onecard.testing.fixtures import unique

PASSWORD = "long-enough-password-1"
SYS = Actor.system("browser-tests")


class Allow:
    """Stands in for the module hooks: every tap allowed, nothing posted."""

    def onecard_authorize_tap(self, tap: Any) -> list[Any]:
        return [taps.TapDecision(allow=True, module="tests")]

    def onecard_tap_recorded(self, tap: Any, decision: Any, session: Any) -> None:
        return None


def _tenant(app: Any, session_factory: Any) -> dict[str, Any]:
    now = utcnow()
    with session_factory() as s:
        tenant = create_tenant(s, unique("live"), "实时监控 Live", actor=SYS, now=now)
        with tenant_scope(tenant.id):
            create_operator(
                s,
                "watcher",
                PASSWORD,
                actor=SYS,
                now=now,
                policy=app.extensions["onecard"].policy,
                roles=["tenant_admin"],
            )
            dev_id = f"g-{uuid.uuid4().hex[:10]}"
            services.add_device(s, services.NewDevice(dev_id, "gate"), actor=SYS, now=now)
            person = create_person(
                s,
                PersonCreate(person_no=unique("P"), name="李四", identity_class="staff"),
                actor=SYS,
                now=now,
            )
            card = issue_card(s, person, NewCard(card_no=f"6222{uuid.uuid4().int % 10**8:08d}"),
                              actor=SYS, now=now)  # fmt: skip
        s.commit()
        return {"id": tenant.id, "slug": tenant.slug, "device": dev_id, "card": card.card_no}


def _tap(session_factory: Any, t: dict[str, Any], req_id: str) -> None:
    with session_factory() as s, tenant_scope(t["id"]):
        ref = services.resolve(s, t["device"])
        assert ref is not None
        cred = Credential(kind=CredentialKind.CARD_NO, value=t["card"])
        tap = TapRequest(req_id=req_id, credential=cred, device_time=1)
        taps.decide(s, ref, tap, Allow(), now=utcnow())
        s.commit()


def _open_monitor(browser: Any, base: str, slug: str) -> tuple[Any, Any]:
    context = browser.new_context(locale="en-US", viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.goto(f"{base}/console/login")
    page.fill("#f-tenant", slug)
    page.fill("#f-username", "watcher")
    page.fill("#f-password", PASSWORD)
    page.click("form button.primary")
    page.wait_for_url(re.compile(r"/console/"))
    page.goto(f"{base}/console/monitor")
    page.wait_for_selector("#live-status.s-ok", timeout=10_000)
    return context, page


@pytest.fixture
def two_tenants(app: Any, session_factory: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    return _tenant(app, session_factory), _tenant(app, session_factory)


def test_a_tap_appears_live_only_in_its_tenant(
    browser: Any, live_server: str, session_factory: Any, two_tenants: Any, screenshots: Any
) -> None:
    mine, theirs = two_tenants
    ctx_a, page = _open_monitor(browser, live_server, mine["slug"])
    ctx_b, other = _open_monitor(browser, live_server, theirs["slug"])
    try:
        assert page.locator("#live-events tbody tr").count() == 0
        _tap(session_factory, mine, "req-1")
        row = page.locator("#live-events tbody tr").first
        row.wait_for(timeout=10_000)
        text = row.inner_text()
        assert mine["device"] in text
        assert "allowed" in text
        assert mine["card"][-4:] in text
        assert mine["card"] not in text
        # filtering: denied only hides the allowed tap; clearing the filter shows it again
        page.select_option("#f-decision", "deny")
        assert not row.is_visible()
        page.select_option("#f-decision", "")
        assert row.is_visible()
        page.screenshot(path=str(screenshots / "en-live-monitor.png"), full_page=True)
        other.wait_for_timeout(1500)  # several poll rounds
        assert other.locator("#live-events tbody tr").count() == 0
    finally:
        ctx_a.close()
        ctx_b.close()
