"""End-to-end through a real Mosquitto: exactly-once records, list deltas, bad input, bundles."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onecard.device_agents.protocol.blacklist import credential_key
from onecard.device_agents.protocol.bundles import verify_bundle
from onecard.device_agents.protocol.codec import decode
from onecard.device_agents.protocol.codes import CredentialKind, ProtocolError
from onecard.device_agents.protocol.messages import ConfigBundle as ConfigMessage
from onecard.device_agents.protocol.topics import Topic
from onecard.platform.actors import Actor
from onecard.platform.cards.lifecycle import NewCard, issue_card, report_loss
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices import bundles
from onecard.platform.devices.models import ConfigBundle, Device, DeviceRecord
from onecard.platform.devices.services import get_device
from onecard.platform.people.schemas import PersonCreate
from onecard.platform.people.services import create_person

SYS = Actor.system("tests")
EPOCH = "ep-0001"  # as conftest.EPOCH
DEVICE_TIME = 1_788_220_800_000
WAIT = 45.0


def rec(seq: int, **extra: Any) -> dict[str, Any]:
    return {
        "epoch": EPOCH,
        "seq": seq,
        "event": "tap",
        "amount": 100 + seq,
        "device_time": DEVICE_TIME,
        **extra,
    }


def group() -> str:
    return f"g{uuid.uuid4().hex[:10]}"


def stored(sf: sessionmaker[Session], tenant_id: int, device_id: str) -> list[int]:
    with sf() as s, tenant_scope(tenant_id):
        pk = get_device(s, device_id).id
        return list(
            s.scalars(
                select(DeviceRecord.seq)
                .where(DeviceRecord.device_pk == pk)
                .order_by(DeviceRecord.seq)
            )
        )


def wait_until(cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_replayed_batch_adds_nothing_and_a_dropped_record_is_asked_for(
    broker: Any, fleet: Any, start_bridge: Any, session_factory: Any
) -> None:
    f = fleet(broker, 1)
    start_bridge(broker, group=group())
    dev = f.connect(next(iter(f.passwords)))
    assert dev.online()["acked_upto"] == 0
    batch = {"epoch": EPOCH, "records": [rec(1), rec(2), rec(3)]}
    for _ in range(3):
        dev.send("up/records", batch)
        assert dev.expect("down/ack")["acked_upto"] == 3
    assert stored(session_factory, f.tenant.id, dev.device_id) == [1, 2, 3]

    dev.send("up/records", {"epoch": EPOCH, "records": [rec(4), rec(6)]})
    ack = dev.expect("down/ack")
    assert (ack["acked_upto"], ack["highest"], ack["missing"]) == (4, 6, [[5, 5]])

    dev.send("up/records", {"epoch": EPOCH, "records": [rec(5)]})
    ack = dev.expect("down/ack")
    assert (ack["acked_upto"], ack["highest"], ack.get("missing", [])) == (6, 6, [])
    assert stored(session_factory, f.tenant.id, dev.device_id) == [1, 2, 3, 4, 5, 6]


def _lost_card(sf: sessionmaker[Session], tenant_id: int, now: datetime) -> tuple[int, str]:
    with sf() as s, tenant_scope(tenant_id):
        person = create_person(
            s,
            PersonCreate(person_no=f"P{uuid.uuid4().hex[:8]}", name="A", identity_class="staff"),
            actor=SYS,
            now=now,
        )
        card = issue_card(
            s, person, NewCard(card_no=f"C{uuid.uuid4().hex[:10]}"), actor=SYS, now=now
        )
        s.commit()
        report_loss(s, card, actor=SYS, now=now)
        s.commit()
        return card.id, card.card_no


def test_loss_report_reaches_every_online_device_and_receipts_are_listed(
    broker: Any,
    fleet: Any,
    start_bridge: Any,
    session_factory: Any,
    make_api_user: Any,
    now: datetime,
) -> None:
    f = fleet(broker, 3)
    start_bridge(broker, group=group())
    ids = sorted(f.passwords)
    online = [f.connect(i) for i in ids[:2]]
    for d in online:
        d.online()
    card_id, card_no = _lost_card(session_factory, f.tenant.id, now)
    key = credential_key(CredentialKind.CARD_NO, card_no)
    deltas = [d.expect("down/lists", lambda b: key in b.get("add", [])) for d in online]
    assert all(x["list"] == "blacklist" and x["kind"] == "delta" for x in deltas)

    online[0].send(
        "up/receipt",
        {"kind": "list", "list": "blacklist", "version": deltas[0]["to"], "status": "applied"},
    )
    api = make_api_user(tenant=f.tenant)

    def receipts() -> dict[str, Any]:
        r = api.get(f"/api/v1/lists/card-blacklist/receipts?card_id={card_id}")
        assert r.status_code == 200, r.get_json()
        return r.get_json()  # type: ignore[no-any-return]

    wait_until(lambda: len(receipts()["receipts"]) == 1)
    body = receipts()
    assert [r["device_id"] for r in body["receipts"]] == [ids[0]]
    assert sorted(body["not_yet_protected"]) == sorted(ids[1:])


def test_malformed_payloads_are_counted_answered_and_never_lose_valid_records(
    broker: Any, fleet: Any, start_bridge: Any, session_factory: Any
) -> None:
    f = fleet(broker, 1)
    bridge = start_bridge(broker, group=group())
    dev = f.connect(next(iter(f.passwords)))
    dev.online()
    reasons = []
    for suffix, payload in [
        ("up/records", b"{not json"),
        ("up/records", json.dumps({"v": 1, "epoch": "one", "records": 3}).encode()),
        ("up/tap", json.dumps({"v": 1, "req_id": "r1", "credential": 7}).encode()),
        ("up/tap", b"{" + b" " * (300 * 1024) + b"}"),
        ("up/nonsense", b"{}"),
    ]:
        dev.send(suffix, payload)
        reasons.append(dev.expect("down/cmd", lambda b: b["name"] == "error")["args"]["reason"])
    assert reasons == ["malformed_json", "bad_value", "bad_type", "too_large", "bad_topic"]

    mixed = {"epoch": EPOCH, "records": [rec(1), {"seq": 2, "event": 5}, "garbage", rec(3)]}
    dev.send("up/records", mixed)
    ack = dev.expect("down/ack")
    assert (ack["acked_upto"], [r["seq"] for r in ack["rejected"]]) == (3, [2])
    assert stored(session_factory, f.tenant.id, dev.device_id) == [1, 2, 3]
    dev.send("up/time", {"t0": 1000})
    assert dev.expect("down/time")["t0"] == 1000  # still serving
    outcomes = {o for (_r, o) in bridge.counts}
    assert {"malformed:malformed_json", "malformed:too_large", "malformed:bad_topic"} <= outcomes


def test_config_bundle_is_signed_published_retained_and_tampering_is_refused(
    broker: Any, fleet: Any, start_bridge: Any, session_factory: Any, box: Any, now: datetime
) -> None:
    f = fleet(broker, 1)
    start_bridge(broker, group=group())
    dev_id = next(iter(f.passwords))
    dev = f.connect(dev_id)
    dev.online()
    with session_factory() as s, tenant_scope(f.tenant.id):
        device = get_device(s, dev_id)
        device.settings = {"mode": "canteen", "limit_fen": 5000}
        bundle = bundles.build(s, device, {}, box=box, actor=SYS, now=now)
        s.commit()
        key = bundles.public_key(s, bundle.key_id)
    raw = dev.expect("down/config")
    msg = decode(Topic.CONFIG, json.dumps(raw))
    assert isinstance(msg, ConfigMessage)
    body = verify_bundle(msg, key, device=dev_id)  # what the agent runs
    assert body["settings"]["mode"] == "canteen"
    tampered = msg.model_copy(update={"body": msg.body.replace("canteen", "free")})
    with pytest.raises(ProtocolError, match="bad_hash"):
        verify_bundle(tampered, key, device=dev_id)
    rehashed = tampered.model_copy(
        update={"sha256": hashlib.sha256(tampered.body.encode()).hexdigest()}
    )
    with pytest.raises(ProtocolError, match="bad_signature"):
        verify_bundle(rehashed, key, device=dev_id)
    with pytest.raises(ProtocolError, match="wrong_device"):
        verify_bundle(msg, key, device="another-device")
    with pytest.raises(ProtocolError, match="bad_signature"):
        verify_bundle(msg.model_copy(update={"version": msg.version + 1}), key, device=dev_id)
    with session_factory() as s, tenant_scope(f.tenant.id):
        unsigned = ConfigBundle(
            device_pk=bundle.device_pk,
            version=bundle.version + 1,
            content_hash=bundle.content_hash,
            body=bundle.body,
            key_id=bundle.key_id,
            signature="",
            created_at=now,
        )
        with pytest.raises(bundles.UnsignedBundle):
            bundles.message(s, dev_id, unsigned)
        forged = ConfigBundle(
            device_pk=bundle.device_pk,
            version=bundle.version + 1,
            content_hash=bundle.content_hash,
            body=bundle.body,
            key_id=bundle.key_id,
            signature=bundle.signature,  # signed for another version
            created_at=now,
        )
        with pytest.raises(bundles.UnsignedBundle):
            bundles.message(s, dev_id, forged)


def test_a_foreign_device_record_count_is_untouched(
    broker: Any, fleet: Any, start_bridge: Any, session_factory: Any
) -> None:
    """Tenant comes from the registry: a tenant named in a payload is ignored."""
    f = fleet(broker, 1)
    start_bridge(broker, group=group())
    dev = f.connect(next(iter(f.passwords)))
    dev.online()
    dev.send("up/records", {"epoch": EPOCH, "tenant_id": 1, "records": [rec(1)]})
    dev.expect("down/ack")
    with session_factory() as s, tenant_scope(f.tenant.id):
        n = s.scalar(
            select(func.count())
            .select_from(DeviceRecord)
            .join(Device)
            .where(Device.device_id == dev.device_id)
        )
    assert n == 1
