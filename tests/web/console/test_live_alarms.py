"""Module alarms on the live monitor: a canteen reconciliation case reaches the tenant's
consoles over ``/live`` as an ``alarm``, only in its tenant and only with the module on.

The web core imports no module: a module registers an alarm source through its
``onecard_socketio_namespaces`` hook implementation, as the canteen does with
:class:`~onecard.modules.canteen.alarms.ReconCaseAlarms`. The cases are rows of the canteen's
real table, written as its offline policy writes one when a card overspends (when it opens one
is the canteen's own tests' subject).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from flask import Flask
from flask_socketio import Namespace
from sqlalchemy.orm import Session, sessionmaker
from tests.web.console.conftest import ConsoleUser

from onecard.modules.canteen import setup
from onecard.modules.canteen.alarms import ReconCaseAlarms
from onecard.modules.canteen.models import Pos, ReconCase
from onecard.modules.canteen.rules import Mode
from onecard.platform.actors import Actor
from onecard.platform.cards.lifecycle import NewCard, issue_card
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices.services import NewDevice, add_device
from onecard.platform.errors import PluginError
from onecard.platform.hookspecs import hookimpl
from onecard.platform.people.schemas import PersonCreate
from onecard.platform.people.services import create_person
from onecard.platform.tenants.models import Tenant
from onecard.platform.tenants.services import create_site, set_module_enabled
from onecard.testing.fixtures import unique
from onecard.web import create_app
from onecard.web.live import NAMESPACE, Poller, socketio_of

SYS = Actor.system("tests")


class _Panel:
    """A plugin with a live console panel of its own (a namespace, no alarm source)."""

    @hookimpl
    def onecard_socketio_namespaces(self) -> list[Any]:
        return [Namespace("/panel-live")]


class _Junk:
    """A plugin returning something that is neither."""

    @hookimpl
    def onecard_socketio_namespaces(self) -> list[Any]:
        return [object()]


@pytest.fixture
def live_app(app: Flask) -> Flask:
    """An app of its own (Socket.IO's test client patches its server) with the installed
    modules' hooks, so the canteen's alarm source is collected at start-up."""
    st = app.extensions["onecard"]
    own = create_app(st.settings, engine=st.engine, registry=st.registry)
    poller: Poller = own.extensions["onecard.live"]
    poller.stopped.set()  # no background loop: the test drives the poller with tick()
    return own


@dataclass
class Canteen:
    """A tenant's canteen with a POS, where a card can overspend offline."""

    tenant: Tenant
    pos: Pos

    def overspend(self, sessions: sessionmaker[Session], now: datetime) -> str:
        """A holder with an empty purse bought a 12.00 meal offline at the POS: the canteen's
        case for it, open with 12.00 owed. Returns the card number."""
        with sessions() as s, tenant_scope(self.tenant.id):
            person = create_person(
                s,
                PersonCreate(person_no=unique("P"), name="韩梅梅", identity_class="staff"),
                actor=SYS,
                now=now,
            )
            card = issue_card(s, person, NewCard(card_no=unique("C")), actor=SYS, now=now)
            s.add(
                ReconCase(
                    kind="offline_overspend",
                    card_no=card.card_no,
                    card_id=card.id,
                    person_id=person.id,
                    business_day=now.date(),
                    status="open",
                    over_fen=0,
                    receivable_fen=1200,
                    sale_ids=[],
                    detail={
                        "reason": "purse_shortfall",
                        "count": 1,
                        "total_fen": 1200,
                        "devices": [self.pos.id],
                    },
                    opened_at=now,
                )
            )
            s.commit()
            return card.card_no


@pytest.fixture
def canteen_of(session_factory: sessionmaker[Session], now: datetime) -> Callable[..., Canteen]:
    """Factory: ``canteen_of(tenant, enabled=True)``: a merchant with a free-amount POS."""

    def _make(tenant: Tenant, enabled: bool = True) -> Canteen:
        with session_factory() as s, tenant_scope(tenant.id):
            set_module_enabled(s, "canteen", enabled, actor=SYS, now=now)
            site = create_site(s, unique("S"), "东校区", "Asia/Shanghai", actor=SYS, now=now)
            merchant = setup.create_merchant(s, unique("M"), "一食堂", site, actor=SYS, now=now)
            device, _pw = add_device(
                s,
                NewDevice(unique("pos-").lower(), "pos", module="canteen", site_id=site.id),
                actor=SYS,
                now=now,
            )
            pos = setup.add_pos(s, merchant, device, mode=Mode.FREE, actor=SYS, now=now)
            s.commit()
            return Canteen(tenant, pos)

    return _make


def watching(app: Flask, user: ConsoleUser) -> Any:
    """A Socket.IO test client on ``/live`` with ``user``'s console login."""
    browser = ConsoleUser(app.test_client(), user.tenant, user.username)
    assert browser.login().status_code == 303
    client = socketio_of(app).test_client(
        app, namespace=NAMESPACE, flask_test_client=browser.client
    )
    assert client.is_connected(NAMESPACE)
    return client


def alarms(client: Any) -> list[dict[str, Any]]:
    """The ``alarm`` events ``client`` received since last asked."""
    received = client.get_received(NAMESPACE)
    return [r["args"][0] for r in received if r["name"] == "alarm"]


def test_an_offline_overspend_case_reaches_the_monitor_as_an_alarm(
    live_app: Flask,
    admin: ConsoleUser,
    canteen_of: Callable[..., Canteen],
    session_factory: sessionmaker[Session],
    now: datetime,
) -> None:
    canteen = canteen_of(admin.tenant)
    client = watching(live_app, admin)

    card_no = canteen.overspend(session_factory, now)
    live_app.extensions["onecard.live"].tick()
    live_app.extensions["onecard.live"].tick()  # nothing new: nothing pushed twice

    [alarm] = alarms(client)
    assert alarm["code"] == "canteen.offline_overspend"
    assert (alarm["device"], alarm["severity"], alarm["source"]) == (
        canteen.pos.device_id,
        "critical",
        "canteen",
    )
    assert alarm["card"] == "•••• " + card_no[-4:]
    assert "12.00 owed" in alarm["message"]


def test_module_alarms_stay_in_their_tenant(
    live_app: Flask,
    admin: ConsoleUser,
    make_console_user: Callable[..., ConsoleUser],
    canteen_of: Callable[..., Canteen],
    session_factory: sessionmaker[Session],
    now: datetime,
) -> None:
    other = make_console_user()
    canteen = canteen_of(admin.tenant)
    canteen_of(other.tenant)
    mine, theirs = watching(live_app, admin), watching(live_app, other)

    card_no = canteen.overspend(session_factory, now)
    live_app.extensions["onecard.live"].tick()

    assert [a["card"] for a in alarms(mine)] == ["•••• " + card_no[-4:]]
    assert alarms(theirs) == []


def test_a_switched_off_module_raises_no_alarms(
    live_app: Flask,
    admin: ConsoleUser,
    canteen_of: Callable[..., Canteen],
    session_factory: sessionmaker[Session],
    now: datetime,
) -> None:
    canteen = canteen_of(admin.tenant, enabled=False)
    client = watching(live_app, admin)

    canteen.overspend(session_factory, now)
    live_app.extensions["onecard.live"].tick()

    assert alarms(client) == []


def test_the_canteen_registers_its_case_source_through_its_hook(live_app: Flask) -> None:
    poller: Poller = live_app.extensions["onecard.live"]

    assert [type(s) for s in poller.sources if s.module == "canteen"] == [ReconCaseAlarms]


def test_a_module_namespace_is_mounted_and_anything_else_fails_the_boot(app: Flask) -> None:
    st = app.extensions["onecard"]
    panel, junk = _Panel(), _Junk()
    st.registry.pm.register(panel, name="panel-live-test")
    try:
        own = create_app(st.settings, engine=st.engine, registry=st.registry)
    finally:
        st.registry.pm.unregister(panel)
    assert "/panel-live" in socketio_of(own).server.namespace_handlers

    st.registry.pm.register(junk, name="junk-live-test")
    try:
        with pytest.raises(PluginError, match=r"neither a Socket\.IO namespace nor an alarm"):
            create_app(st.settings, engine=st.engine, registry=st.registry)
    finally:
        st.registry.pm.unregister(junk)
