"""Hellos handled together (`Bridge.handle_hellos`, a reconnect storm) answer and store what
the same hellos handled one at a time do: list deltas, a newer config bundle, the epoch's ack
with its missing ranges, the device and list-state rows."""

from __future__ import annotations

import json
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onecard.device_agents.protocol.blacklist import credential_key
from onecard.device_agents.protocol.codes import CredentialKind
from onecard.device_agents.protocol.messages import Ack, ConfigBundle, ListDelta
from onecard.platform.actors import Actor
from onecard.platform.cards.lifecycle import NewCard, issue_card, report_loss
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices import bundles
from onecard.platform.devices.bridge import Bridge, Connection
from onecard.platform.devices.models import Device, DeviceListState
from onecard.platform.devices.services import NewDevice, add_device, get_device
from onecard.platform.people.schemas import PersonCreate
from onecard.platform.people.services import create_person
from onecard.platform.secrets import SecretBox
from onecard.platform.tenants.models import Tenant
from onecard.testing.fixtures import unique

SECRET = "hello-secret-0123456789abcdef"
CASES = ("fresh", "behind", "config", "gap", "wiped")
DEVICE_TIME = 1_788_220_800_000


@pytest.fixture
def bridge(session_factory: sessionmaker[Session]) -> Bridge:
    b = Bridge(session_factory, Connection(), box=SecretBox(SECRET))
    b.sent = []  # type: ignore[attr-defined]
    b.send = lambda device_id, message: b.sent.append((device_id, message))  # type: ignore[attr-defined,method-assign]
    return b


def _lost_card(session: Session, actor: Actor, now: Any) -> str:
    person = create_person(
        session,
        PersonCreate(person_no=unique("P"), name="Lost", identity_class="staff"),
        actor=actor,
        now=now,
    )
    card = issue_card(session, person, NewCard(card_no=unique("L")), actor=actor, now=now)
    session.flush()
    report_loss(session, card, actor=actor, now=now)
    return card.card_no


def _hello(case: str, epoch: str) -> bytes:
    lists = {"fresh": {}, "behind": {"blacklist": 0}, "wiped": {"blacklist": 0}}.get(case, {})
    body = {
        "v": 1,
        "kind": "pos",
        "firmware": f"fw-{case}",
        "epoch": epoch,
        "max_seq": 4 if case == "gap" else 0,
        "unsent": 0,
        "lists": lists,
        "config_version": 0,
        "device_time": DEVICE_TIME,
    }
    return json.dumps(body).encode()


def _upload(epoch: str, seqs: list[int]) -> bytes:
    records = [
        {"epoch": epoch, "seq": q, "event": "tap", "amount": 100, "device_time": DEVICE_TIME}
        for q in seqs
    ]
    return json.dumps({"v": 1, "epoch": epoch, "records": records}).encode()


def _prepare(
    bridge: Bridge,
    session: Session,
    tenant: Tenant,
    actor: Actor,
    now: Any,
    prefix: str,
) -> dict[str, str]:
    """One device per case; returns ``{case: device id}``."""
    ids = {case: unique(f"{prefix}-{case}-").lower() for case in CASES}
    with tenant_scope(tenant.id):
        for case, device_id in ids.items():
            device, _pw = add_device(session, NewDevice(device_id, "pos"), actor=actor, now=now)
            if case == "config":
                device.settings = {"mode": "canteen", "limit_fen": 5000}
                bundles.build(session, device, {}, box=SecretBox(SECRET), actor=actor, now=now)
            if case == "wiped":  # it had applied versions, then lost its store
                session.flush()
                session.add(
                    DeviceListState(
                        device_pk=device.id, list_name="blacklist", applied_version=1,
                        sent_version=1,
                    )
                )  # fmt: skip
    session.commit()
    bridge.handle_records([(ids["gap"], _upload("ep-gap", [1, 2, 4]))])
    bridge.sent.clear()  # type: ignore[attr-defined]
    return ids


def _comparable(message: Any) -> Any:
    """What must match between the two ways (a bundle is signed for its own device)."""
    if isinstance(message, ConfigBundle):
        return ("config", message.version)
    if isinstance(message, ListDelta):
        return ("delta", message.from_, message.to, message.add, message.remove)
    if isinstance(message, Ack):
        return ("ack", message.epoch, message.acked_upto, message.highest, message.missing)
    return message


def _rows(session: Session, tenant: Tenant, device_id: str) -> tuple[Any, ...]:
    with tenant_scope(tenant.id):
        d = get_device(session, device_id)
        st = session.scalar(select(DeviceListState).where(DeviceListState.device_pk == d.id))
        lists = None if st is None else (st.applied_version, st.sent_version)
        return (d.online, d.firmware, d.epoch, d.config_version, lists)


def test_hellos_handled_together_answer_and_store_what_one_at_a_time_does(
    bridge: Bridge,
    session: Session,
    tenant: Tenant,
    system_actor: Actor,
    now: Any,
) -> None:
    with tenant_scope(tenant.id):
        lost = _lost_card(session, system_actor, now)
    session.commit()
    alone = _prepare(bridge, session, tenant, system_actor, now, "one")
    together = _prepare(bridge, session, tenant, system_actor, now, "many")
    epochs = {case: "ep-gap" if case == "gap" else f"ep-{case}" for case in CASES}

    for case in CASES:
        bridge.handle(f"oc/v1/{alone[case]}/up/hello", _hello(case, epochs[case]))
    bridge.handle_hellos([(together[case], _hello(case, epochs[case])) for case in CASES])

    sent: list[tuple[str, Any]] = bridge.sent  # type: ignore[attr-defined]
    by_device: dict[str, list[Any]] = {}
    for device_id, message in sent:
        by_device.setdefault(device_id, []).append(_comparable(message))
    session.expire_all()
    for case in CASES:
        one, many = by_device[alone[case]], by_device[together[case]]
        assert many == one, case
        assert one[-1][0] == "ack", f"{case}: the ack comes last"
        assert _rows(session, tenant, together[case]) == _rows(session, tenant, alone[case])

    # What the cases were there to show, so that the comparison is not of empty answers:
    assert ("ack", "ep-gap", 2, 4, ((3, 3),)) in by_device[together["gap"]]
    assert by_device[together["config"]][-2] == ("config", 1)  # lists, config, then the ack
    key = credential_key(CredentialKind.CARD_NO, lost)
    for case in ("behind", "wiped", "fresh"):
        delta = by_device[together[case]][0]
        assert delta[0] == "delta", case
        assert key in delta[3], case
    assert _rows(session, tenant, together["wiped"])[4] == (0, 1)  # rewound, then sent again


def test_a_device_unknown_or_malformed_in_a_batch_leaves_the_others_answered(
    bridge: Bridge, session: Session, tenant: Tenant, system_actor: Actor, now: Any
) -> None:
    ids = _prepare(bridge, session, tenant, system_actor, now, "mixed")
    bridge.handle_hellos(
        [
            (ids["fresh"], _hello("fresh", "ep-a")),
            ("no-such-device", _hello("fresh", "ep-b")),
            (ids["behind"], b'{"v":1,"kind":"pos"'),  # cut short
            (ids["config"], _hello("config", "ep-c")),
        ]
    )
    sent: list[tuple[str, Any]] = bridge.sent  # type: ignore[attr-defined]
    acked = {d for d, m in sent if isinstance(m, Ack)}
    assert acked == {ids["fresh"], ids["config"]}
    assert bridge.counts[("up/hello", "ok")] == 2
    assert any(k[0] == "up/hello" and k[1].startswith("malformed") for k in bridge.counts)
    assert bridge.counts[("up/hello", "unknown_device")] == 1
    with tenant_scope(tenant.id):
        assert session.scalar(select(Device.online).where(Device.device_id == ids["behind"])) in (
            False,
            None,
        )


def _message(device_id: str, suffix: str, payload: bytes) -> tuple[mqtt.MQTTMessage, float]:
    msg = mqtt.MQTTMessage(topic=f"oc/v1/{device_id}/{suffix}".encode())
    msg.payload = payload
    return msg, time.monotonic()


def test_a_reconnect_storms_states_and_hellos_share_one_transaction(
    bridge: Bridge, session: Session, tenant: Tenant, system_actor: Actor, now: Any
) -> None:
    """What terminals send on connecting (state, hello, a time request), queued together:
    one transaction for all states and hellos; the time requests, which change nothing, do
    not split it; a state after a device's hello is applied after it."""
    ids = [unique("storm-").lower() for _ in range(4)]
    with tenant_scope(tenant.id):
        for device_id in ids:
            add_device(session, NewDevice(device_id, "pos"), actor=system_actor, now=now)
    session.commit()
    calls: list[tuple[int, int]] = []
    original = bridge.handle_hellos

    def counted(items: Any, states: Any = None) -> None:
        calls.append((len(items), len(states or [])))
        original(items, states)

    bridge.handle_hellos = counted  # type: ignore[method-assign]
    online = json.dumps({"v": 1, "state": "online"}).encode()
    chunk = []
    for device_id in ids:
        chunk += [
            _message(device_id, "state", online),
            _message(device_id, "up/hello", _hello("fresh", "ep-storm")),
            _message(device_id, "up/time", json.dumps({"v": 1, "t0": DEVICE_TIME}).encode()),
        ]
    chunk.append(_message(ids[0], "state", b"offline"))  # its last will, after its hello
    bridge.handle_chunk(chunk)

    assert calls[0] == (4, 4)  # every state and hello of the storm at once
    sent: list[tuple[str, Any]] = bridge.sent  # type: ignore[attr-defined]
    for device_id in ids:
        kinds = [type(m).__name__ for d, m in sent if d == device_id]
        assert "Ack" in kinds, device_id
        assert "TimeResponse" in kinds, device_id
    session.expire_all()
    with tenant_scope(tenant.id):
        states = {d.device_id: d.online for d in session.scalars(select(Device))}
    assert [states[d] for d in ids] == [False, True, True, True]
