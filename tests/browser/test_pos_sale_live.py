"""A canteen sale end to end: a real agent as a POS, the real bridge, the live monitor in a browser.

A fresh tenant with the canteen enabled (merchant, meal periods over the whole day, holder
rules), a topped-up person whose card has a UID, one POS device of module ``canteen`` attached
with ``canteen.setup.add_pos``. A private Mosquitto (password file + ACL) and the real bridge
(with the module registry, so the canteen's hooks decide and post) run on the test database;
one device-agent runtime connects as that POS. In Chinese and in English, an administrator
watches the live monitor: the agent sells a meal online (allowed, the row appears live), the
card is reported lost in the console (confirm step), the agent presents it again and is denied
with ``CARD_LOST`` (the denied row appears live).
"""

from __future__ import annotations

import re
import secrets
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from onecard.device_agents.protocol.codes import DeviceKind, ReasonCode
from onecard.device_agents.runtime.agent import AgentSettings, Presented
from onecard.device_agents.runtime.host import AgentHost
from onecard.device_agents.runtime.mqtt import BrokerAddress
from onecard.embedded import MEALS
from onecard.modules.canteen import rules
from onecard.modules.canteen import setup as canteen
from onecard.platform.actors import Actor
from onecard.platform.authz.services import create_operator
from onecard.platform.cards.lifecycle import NewCard, issue_card
from onecard.platform.clock import utcnow
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices.bridge import Bridge, Connection
from onecard.platform.devices.broker import EmbeddedBroker, Listener, mosquitto_binary
from onecard.platform.devices.services import NewDevice, add_device
from onecard.platform.ledger import operations as ops
from onecard.platform.people.schemas import PersonCreate
from onecard.platform.people.services import create_person
from onecard.platform.registry import Registry
from onecard.platform.secrets import SecretBox
from onecard.platform.tenants.services import create_site, create_tenant, set_module_enabled
from onecard.testing.fixtures import unique

PASSWORD = "long-enough-password-1"
PLATFORM_PW = "platform-browser-password"
SECRET = "test-secret-key-0123456789abcdef"  # the app's secret (onecard.testing.fixtures)
WAIT = 20.0
SALE_FEN = 1200
SYS = Actor.system("browser-tests")
TEXT = {
    "zh": {"monitor": "实时监控", "allowed": "允许", "denied": "拒绝", "lost": "已挂失"},
    "en": {"monitor": "Live monitor", "allowed": "allowed", "denied": "denied", "lost": "lost"},
}


@dataclass
class Canteen:
    slug: str
    device_id: str
    device_password: str
    device_hash: str
    card_id: int
    card_no: str
    uid: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _canteen(app: Any, session_factory: Any) -> Canteen:
    """A fresh tenant set up like ``onecard run`` sets up the demo tenant's canteen."""
    now = utcnow()
    with session_factory() as s:
        tenant = create_tenant(s, unique("pos"), "食堂 Canteen", actor=SYS, now=now)
        with tenant_scope(tenant.id):
            actor = Actor.system("browser-tests", tenant_id=tenant.id)
            create_operator(
                s,
                "admin",
                PASSWORD,
                actor=actor,
                now=now,
                policy=app.extensions["onecard"].policy,
                roles=["tenant_admin"],
            )
            set_module_enabled(s, "canteen", True, actor=actor, now=now)
            site = create_site(s, unique("S"), "北校区 North campus", "Asia/Shanghai",
                               actor=actor, now=now)  # fmt: skip
            merchant = canteen.create_merchant(
                s, unique("m"), "第一食堂 Canteen 1", site, actor=actor, now=now
            )
            periods = [rules.MealPeriod(k, a, b) for k, a, b in MEALS]
            canteen.set_meal_periods(s, site, periods, actor=actor, now=now)
            for identity in ("student", "staff"):
                rule = rules.HolderRule(per_meal_limit_fen=5000, per_day_limit_fen=15000)
                canteen.set_rule(s, identity, rule, actor=actor, now=now)
            device_id = f"pos-{uuid.uuid4().hex[:10]}"
            device, device_pw = add_device(
                s,
                NewDevice(device_id, "pos", module="canteen", name="POS 1", site_id=site.id),
                actor=actor,
                now=now,
            )
            canteen.add_pos(s, merchant, device, mode=rules.Mode.FREE, actor=actor, now=now)
            person = create_person(
                s,
                PersonCreate(person_no=unique("P"), name="王五", identity_class="staff"),
                actor=actor,
                now=now,
            )
            uid = secrets.token_hex(4).upper()
            card_no = f"6222{uuid.uuid4().int % 10**8:08d}"
            card = issue_card(s, person, NewCard(card_no=card_no, uid=uid), actor=actor, now=now)
            ops.top_up(s, person.id, 10_000, channel="cash", actor=actor, now=now)
            s.commit()
            return Canteen(
                tenant.slug, device_id, device_pw, device.password_hash, card.id, card_no, uid
            )


@dataclass
class Running:
    world: Canteen
    host: AgentHost
    bridge: Bridge


@pytest.fixture
def pos_world(
    app: Any, session_factory: Any, tmp_path: Path, live_server: str
) -> Iterator[Running]:
    """The canteen world, a private Mosquitto, the real bridge and one agent as the POS."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto must be installed (apt-get install -y mosquitto)")
    world = _canteen(app, session_factory)
    port = _free_port()
    broker = EmbeddedBroker(
        tmp_path / "broker",
        Listener(port, "127.0.0.1"),
        platform_password=PLATFORM_PW,
        devices=[(world.device_id, world.device_hash, True)],
    )
    broker.start()
    assert broker.kind == "mosquitto"
    conn = Connection(
        "127.0.0.1",
        port,
        "onecard-bridge",
        PLATFORM_PW,
        client_id=f"br-{uuid.uuid4().hex[:10]}",
        share_group=f"pos{uuid.uuid4().hex[:8]}",
    )
    bridge = Bridge(
        session_factory, conn, box=SecretBox(SECRET), registry=Registry.load(), outbox_interval=0.1
    )
    host: AgentHost | None = None
    try:
        bridge.start()
        assert bridge.subscribed.wait(WAIT), "bridge did not connect and subscribe"
        host = AgentHost.open(
            AgentSettings(
                device_id=world.device_id,
                kind=DeviceKind.POS,
                tap_timeout_s=10.0,
                heartbeat_s=2.0,
            ),
            tmp_path / "agent",
            BrokerAddress(
                "127.0.0.1", port, username=world.device_id, password=world.device_password
            ),
        ).start()
        assert host.wait_online(WAIT), "the agent did not come online through the bridge"
        yield Running(world, host, bridge)
    finally:
        if host is not None:
            host.stop()
        bridge.stop()
        broker.stop()


def _login_monitor(browser: Any, base: str, slug: str, lang: str) -> tuple[Any, Any]:
    # Chinese from the browser's Accept-Language; English from the console's switch.
    context = browser.new_context(locale="zh-CN", viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.goto(f"{base}/console/login")
    if lang == "en":
        page.click("button[name=lang][value=en]")
    page.fill("#f-tenant", slug)
    page.fill("#f-username", "admin")
    page.fill("#f-password", PASSWORD)
    page.click("form button.primary")
    page.wait_for_url(re.compile(r"/console/"))
    page.goto(f"{base}/console/monitor")
    page.wait_for_selector("#live-status.s-ok", timeout=10_000)
    assert TEXT[lang]["monitor"] in page.inner_text("h1")
    return context, page


def _tap_rows(page: Any, decision: str) -> Any:
    return page.locator(f"#live-events tbody tr[data-kind='tap'][data-decision='{decision}']")


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_pos_sale_then_loss_report_live(
    lang: str, browser: Any, live_server: str, pos_world: Running, screenshots: Path
) -> None:
    t, w, host = TEXT[lang], pos_world.world, pos_world.host
    context, page = _login_monitor(browser, live_server, w.slug, lang)
    try:
        # A meal sold online: the platform (canteen hooks) allows it, the row appears live.
        sale = host.tap(Presented.uid(w.uid, SALE_FEN), timeout=WAIT)
        assert sale.online, sale
        assert sale.allow, sale
        assert sale.reason is ReasonCode.OK, sale
        assert sale.balance == 10_000 - SALE_FEN, sale
        allowed = _tap_rows(page, "allow").first
        allowed.wait_for(timeout=WAIT * 1000)
        text = allowed.inner_text()
        assert w.device_id in text
        assert t["allowed"] in text
        assert f"{SALE_FEN / 100:.2f}" in text
        assert w.card_no[-4:] in text
        assert w.card_no not in text

        # The card reported lost in the console (cards page, confirm step).
        cards = context.new_page()
        cards.goto(f"{live_server}/console/cards/{w.card_id}")
        cards.click("form[action$='/report-loss'] button")
        cards.wait_for_selector("section.confirm")
        cards.click("section.confirm button.danger")
        cards.wait_for_selector(".badge.s-lost")
        assert t["lost"] in cards.inner_text(".badge.s-lost")
        cards.close()

        # Presented again: denied on the POS with CARD_LOST, the denied row appears live.
        again = host.tap(Presented.uid(w.uid, SALE_FEN), timeout=WAIT)
        assert not again.allow, again
        assert again.reason is ReasonCode.CARD_LOST, again
        assert again.online, again
        denied = _tap_rows(page, "deny").first
        denied.wait_for(timeout=WAIT * 1000)
        text = denied.inner_text()
        assert w.device_id in text
        assert t["denied"] in text
        assert "CARD_LOST" in text
        assert _tap_rows(page, "allow").count() == 1
        page.screenshot(path=str(screenshots / f"{lang}-pos-sale-live.png"), full_page=True)
    finally:
        context.close()
