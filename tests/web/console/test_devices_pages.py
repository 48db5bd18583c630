"""Operations pages: the device list (filters, paging, health), a device, commands, protection,
the live monitor page and the ``/live`` Socket.IO namespace's admission."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from tests.web.console.conftest import ConsoleUser

from onecard.platform.actors import Actor
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices import services
from onecard.platform.devices.models import Device, DeviceCommand, DeviceTap
from onecard.web.console.devices import mask

SYS = Actor.system("tests")


@pytest.fixture
def add_devices(session_factory: sessionmaker[Session], now: datetime) -> Callable[..., list[str]]:
    """Factory: ``add_devices(tenant, n, kind=..., **state)`` registers devices, returns ids."""

    def _add(tenant: Any, n: int, kind: str = "pos", **state: Any) -> list[str]:
        ids = []
        with session_factory() as s, tenant_scope(tenant.id):
            for _ in range(n):
                dev_id = f"d-{uuid.uuid4().hex[:10]}"
                device, _pw = services.add_device(
                    s, services.NewDevice(dev_id, kind, module="canteen"), actor=SYS, now=now
                )
                for key, value in state.items():
                    setattr(device, key, value)
                ids.append(dev_id)
            s.commit()
        return ids

    return _add


def en(user: ConsoleUser) -> ConsoleUser:
    """Switch ``user``'s console to English (the texts asserted on)."""
    assert user.post("/console/language", {"lang": "en", "next": "/console/"}).status_code == 303
    return user


def _rows(html: str) -> int:
    return html.count("<tr data-device=")


def test_device_list_shows_health_and_pages_filters(
    admin: ConsoleUser, add_devices: Callable[..., list[str]], now: datetime
) -> None:
    en(admin)
    add_devices(admin.tenant, 3, kind="door", online=True, last_seen_at=now, unsent=0)
    bad = add_devices(
        admin.tenant, 1, kind="pos", online=True, last_seen_at=now, clock_offset_ms=9000, unsent=3
    )[0]
    page = admin.get("/console/devices?limit=2")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert _rows(html) == 2
    assert "of 4" in html
    html = admin.get("/console/devices?kind=pos").get_data(as_text=True)
    assert _rows(html) == 1
    assert bad in html
    assert "9000 ms" in html
    assert "clock_offset" in html
    # the 3 door devices have no blacklist lag (version 0) and are online: no attention
    html = admin.get("/console/devices?attention=1").get_data(as_text=True)
    assert _rows(html) == 1
    assert bad in html
    assert _rows(admin.get("/console/devices?state=offline").get_data(as_text=True)) == 0
    assert (
        _rows(admin.get("/console/devices?state=online&module=canteen").get_data(as_text=True)) == 4
    )


def test_device_pages_need_devices_view(
    admin: ConsoleUser, make_console_user: Callable[..., ConsoleUser]
) -> None:
    clerk = make_console_user(tenant=admin.tenant, roles=("card_centre",))
    for url in ("/console/devices", "/console/monitor", "/console/devices/protection"):
        assert clerk.get(url).status_code == 403
    assert admin.get("/console/monitor").status_code == 200
    auditor = make_console_user(tenant=admin.tenant, roles=("auditor",))
    assert auditor.get("/console/devices").status_code == 200


def test_devices_of_another_tenant_are_not_found(
    admin: ConsoleUser,
    make_console_user: Callable[..., ConsoleUser],
    add_devices: Callable[..., list[str]],
) -> None:
    theirs = add_devices(make_console_user().tenant, 1)[0]
    assert admin.get(f"/console/devices/{theirs}").status_code == 404
    assert theirs not in admin.get("/console/devices").get_data(as_text=True)


def test_device_detail_pages_taps_with_masked_card_numbers(
    admin: ConsoleUser,
    add_devices: Callable[..., list[str]],
    session_factory: sessionmaker[Session],
    now: datetime,
) -> None:
    dev = add_devices(en(admin).tenant, 1)[0]
    with session_factory() as s, tenant_scope(admin.tenant.id):
        pk = s.scalar(select(Device.id).where(Device.device_id == dev))
        for n in range(25):
            s.add(
                DeviceTap(
                    device_pk=pk,
                    req_id=f"r{n}",
                    card_no=f"62220000{n:04d}",
                    allow=n % 2 == 0,
                    reason="OK" if n % 2 == 0 else "CARD_LOST",
                    amount_fen=1250,
                    decided_at=now + timedelta(seconds=n),
                )
            )
        s.commit()
    html = admin.get(f"/console/devices/{dev}?limit=10").get_data(as_text=True)
    assert "•••• 0024" in html
    assert "62220000" not in html
    assert "12.50" in html
    assert "of 25" in html
    assert "Open the door" in html  # tenant admins hold devices.manage
    html = admin.get(f"/console/devices/{dev}?show=records").get_data(as_text=True)
    assert "No records." in html
    assert mask("1234567") == "•••• 4567"
    assert mask(None) == ""


def test_command_asks_first_then_queues_and_needs_csrf_and_manage(
    admin: ConsoleUser,
    make_console_user: Callable[..., ConsoleUser],
    add_devices: Callable[..., list[str]],
    session_factory: sessionmaker[Session],
) -> None:
    dev = add_devices(admin.tenant, 1)[0]
    url = f"/console/devices/{dev}/commands"
    no_token = admin.client.post(url, data={"name": "open_door", "confirmed": "yes"})
    assert no_token.status_code == 400
    ask = admin.post(url, {"name": "open_door"})
    assert ask.status_code == 200
    assert 'name="confirmed" value="yes"' in ask.get_data(as_text=True)
    done = admin.post(url, {"name": "open_door", "confirmed": "yes"})
    assert done.status_code == 303
    auditor = en(make_console_user(tenant=admin.tenant, roles=("auditor",)))
    assert "Open the door" not in auditor.get(f"/console/devices/{dev}").get_data(as_text=True)
    assert auditor.post(url, {"name": "sync_time", "confirmed": "yes"}).status_code == 403
    assert admin.post(url, {"name": "reboot", "confirmed": "yes"}).status_code == 303  # refused
    with session_factory() as s, tenant_scope(admin.tenant.id):
        names = list(s.scalars(select(DeviceCommand.name)))
    assert names == ["open_door"]
    page = admin.get(f"/console/devices/{dev}").get_data(as_text=True)
    assert "open_door" in page
    assert "pending" in page


def test_protection_page_for_a_card_without_changes_and_unknown_card(
    admin: ConsoleUser,
    person_via_console: Callable[..., int],
    card_via_console: Callable[..., int],
    session_factory: sessionmaker[Session],
    add_devices: Callable[..., list[str]],
) -> None:
    add_devices(en(admin).tenant, 2)
    html = admin.get("/console/devices/protection?card_no=NOPE").get_data(as_text=True)
    assert "No card NOPE." in html
    card_id = card_via_console(admin, person_via_console(admin))
    from onecard.platform.cards.models import Card

    with session_factory() as s, tenant_scope(admin.tenant.id):
        card_no = s.get(Card, card_id).card_no  # type: ignore[union-attr]
    html = admin.get(f"/console/devices/protection?card_no={card_no}").get_data(as_text=True)
    assert "no blacklist change" in html
    assert (
        admin.post(f"/console/cards/{card_id}/report-loss", {"confirmed": "yes"}).status_code == 303
    )
    html = admin.get(f"/console/devices/protection?card_no={card_no}").get_data(as_text=True)
    assert "0 terminals protected, 2 not yet" in html


def test_menu_has_devices_and_monitor(admin: ConsoleUser) -> None:
    html = admin.get("/console/devices").get_data(as_text=True)
    assert 'href="/console/devices"' in html
    assert 'href="/console/monitor"' in html


def test_live_namespace_admits_only_operators_with_devices_view(
    app: Flask, admin: ConsoleUser, make_console_user: Callable[..., ConsoleUser]
) -> None:
    # Socket.IO's test client patches its server's send: use an app of its own, not the
    # session's (whose server the browser tests use).
    from onecard.web import create_app
    from onecard.web.live import socketio_of

    st = app.extensions["onecard"]
    own = create_app(st.settings, engine=st.engine, registry=st.registry)
    sio = socketio_of(own)

    def client(user: ConsoleUser) -> Any:
        browser = ConsoleUser(own.test_client(), user.tenant, user.username)
        assert browser.login().status_code == 303
        return sio.test_client(own, namespace="/live", flask_test_client=browser.client)

    ok = client(admin)
    assert ok.is_connected("/live")
    ok.disconnect(namespace="/live")
    clerk = make_console_user(tenant=admin.tenant, roles=("card_centre",), login=False)
    assert not client(clerk).is_connected("/live")
    anonymous = sio.test_client(own, namespace="/live")
    assert not anonymous.is_connected("/live")


def test_poller_pushes_new_taps_once_to_the_tenant_room_and_state_changes(
    app: Flask,
    admin: ConsoleUser,
    add_devices: Callable[..., list[str]],
    session_factory: sessionmaker[Session],
    now: datetime,
) -> None:
    from onecard.web import create_app
    from onecard.web.live import Poller, room, socketio_of

    st = app.extensions["onecard"]
    own = create_app(st.settings, engine=st.engine, registry=st.registry)
    sent: list[tuple[str, dict[str, Any], str]] = []

    class Sio:
        def emit(self, event: str, data: dict[str, Any], to: str, namespace: str) -> None:
            sent.append((event, data, to))

        def start_background_task(self, target: Any) -> None:
            return None

    assert socketio_of(own) is not None
    poller = Poller(own, Sio())  # type: ignore[arg-type]
    dev = add_devices(admin.tenant, 1, online=True)[0]
    poller.subscribe("sid-1", admin.tenant.id)
    with session_factory() as s, tenant_scope(admin.tenant.id):
        device = s.scalar(select(Device).where(Device.device_id == dev))
        assert device is not None
        for n in range(3):
            s.add(
                DeviceTap(
                    device_pk=device.id,
                    req_id=f"p{n}",
                    card_no=f"88880000{n:04d}",
                    allow=True,
                    reason="OK",
                    amount_fen=None,
                    decided_at=now,
                )
            )
        device.online, device.state_changed_at = False, now + timedelta(days=3650)
        s.commit()
    poller.tick()
    poller.tick()  # nothing new: nothing pushed twice
    taps = [d for e, d, _to in sent if e == "tap"]
    assert [t["card"] for t in taps] == ["•••• 0000", "•••• 0001", "•••• 0002"]
    assert {to for _e, _d, to in sent} == {poller.local_room(admin.tenant.id)}
    assert poller.local_room(admin.tenant.id).startswith(room(admin.tenant.id))
    alarms = [d for e, d, _to in sent if e == "alarm"]
    assert [(a["device"], a["code"]) for a in alarms] == [(dev, "offline")]
    poller.unsubscribe("sid-1")
    assert poller.marks == {}
