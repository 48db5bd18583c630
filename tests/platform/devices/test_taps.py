"""Online tap decisions (taps.decide) on the database: core checks, hook combination, replay."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from onecard.device_agents.protocol.asyncapi import validate_message
from onecard.device_agents.protocol.codec import encode
from onecard.device_agents.protocol.codes import CredentialKind
from onecard.device_agents.protocol.messages import Credential, TapRequest
from onecard.platform.actors import Actor
from onecard.platform.cards.lifecycle import NewCard, issue_card, report_loss
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices import services, taps
from onecard.platform.devices.models import DeviceTap
from onecard.platform.errors import ImmutableRecordError
from onecard.platform.people.schemas import PersonCreate
from onecard.platform.people.services import create_person

SYS = Actor.system("tests")


class Relay:
    """Stands in for the registry's hook relay: fixed module answers, records what it saw."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.seen: list[Any] = []
        self.recorded: list[Any] = []

    def onecard_authorize_tap(self, tap: Any) -> list[Any]:
        self.seen.append(tap)
        return list(self.answers)

    def onecard_tap_recorded(self, tap: Any, decision: Any, session: Any) -> None:
        self.recorded.append((tap.req_id, decision.allow))


def _setup(sf: sessionmaker[Session], tenant_id: int, now: datetime) -> tuple[str, str, str]:
    with sf() as s, tenant_scope(tenant_id):
        dev_id = f"t-{uuid.uuid4().hex[:10]}"
        services.add_device(s, services.NewDevice(dev_id, "door"), actor=SYS, now=now)
        person = create_person(
            s,
            PersonCreate(person_no=f"P{uuid.uuid4().hex[:8]}", name="A", identity_class="staff"),
            actor=SYS,
            now=now,
        )
        ok = issue_card(s, person, NewCard(card_no=f"A{uuid.uuid4().hex[:8]}"), actor=SYS, now=now)
        lost = issue_card(
            s, person, NewCard(card_no=f"L{uuid.uuid4().hex[:8]}"), actor=SYS, now=now
        )
        s.commit()
        report_loss(s, lost, actor=SYS, now=now)
        s.commit()
        return dev_id, ok.card_no, lost.card_no


def _tap(req_id: str, card_no: str) -> TapRequest:
    cred = Credential(kind=CredentialKind.CARD_NO, value=card_no)
    return TapRequest(req_id=req_id, credential=cred, device_time=1)


def _decide(
    sf: sessionmaker[Session],
    tenant_id: int,
    dev_id: str,
    tap: TapRequest,
    hooks: Any,
    now: datetime,
) -> taps.TapOutcome:
    with sf() as s, tenant_scope(tenant_id):
        ref = services.resolve(s, dev_id)
        assert ref is not None
        out = taps.decide(s, ref, tap, hooks, now=now)
        s.commit()
    msg = out.message()
    validate_message(f"oc/v1/{dev_id}/down/tap", encode(msg))
    return out


def test_core_checks_hooks_and_replay(
    make_tenant: Any, session_factory: sessionmaker[Session], now: datetime
) -> None:
    tenant = make_tenant()
    dev, ok, lost = _setup(session_factory, tenant.id, now)
    sf, tid = session_factory, tenant.id

    unknown = _decide(sf, tid, dev, _tap("r1", "NOPE"), Relay(), now)
    assert (unknown.allow, unknown.reason) == (False, "CARD_UNKNOWN")
    refused = _decide(sf, tid, dev, _tap("r2", lost), Relay(taps.TapDecision(True)), now)
    assert (refused.allow, refused.reason) == (False, "CARD_LOST")

    silence = _decide(sf, tid, dev, _tap("r3", ok), Relay(None), now)
    assert (silence.allow, silence.reason) == (False, "NO_HANDLER")

    deny = taps.TapDecision(False, "LIMIT_REACHED", detail="per_day_limit", module="m2")
    relay = Relay(taps.TapDecision(True, module="m1"), deny)
    denied = _decide(sf, tid, dev, _tap("r4", ok), relay, now)
    assert (denied.allow, denied.reason, denied.message().detail) == (
        False,
        "LIMIT_REACHED",
        "per_day_limit",
    )
    assert relay.seen[0].session is not None  # modules read through the tap's session

    allowed_relay = Relay(taps.TapDecision(True, module="m1"))
    allowed = _decide(sf, tid, dev, _tap("r5", ok), allowed_relay, now)
    assert allowed.allow
    assert allowed.message().reason.value == "OK"
    assert allowed_relay.recorded == [("r5", True)]

    again = _decide(sf, tid, dev, _tap("r5", ok), Relay(deny), now)
    assert again.replayed
    assert again.message() == allowed.message()


# --- a decided tap is a fact: written once, never changed -------------------------------
@pytest.fixture
def decided_tap(make_tenant: Any, session_factory: Any, now: Any) -> tuple[int, int]:
    tenant = make_tenant()
    dev, ok, _lost = _setup(session_factory, tenant.id, now)
    _decide(session_factory, tenant.id, dev, _tap("fact-1", ok), Relay(None), now)
    with session_factory() as s, tenant_scope(tenant.id):
        tap_id = s.scalar(select(DeviceTap.id).where(DeviceTap.req_id == "fact-1"))
    assert tap_id is not None
    return tenant.id, tap_id


def test_a_decided_tap_cannot_be_edited_through_the_orm(session_factory, decided_tap):
    tenant_id, tap_id = decided_tap
    with session_factory() as s, tenant_scope(tenant_id):
        row = s.get(DeviceTap, tap_id)
        row.allow = True
        with pytest.raises(ImmutableRecordError):
            s.flush()


@pytest.mark.postgres_only
def test_the_database_refuses_to_edit_a_decided_tap(session_factory, decided_tap):
    _tenant_id, tap_id = decided_tap
    with session_factory() as s, pytest.raises(DBAPIError, match="append-only"):
        s.execute(text("UPDATE device_taps SET allow = true WHERE id = :id"), {"id": tap_id})


def test_a_batch_decides_as_one_by_one_and_writes_each_request_once(
    make_tenant: Any, session_factory: sessionmaker[Session], now: datetime
) -> None:
    tenant = make_tenant()
    dev, ok, lost = _setup(session_factory, tenant.id, now)
    earlier = _decide(session_factory, tenant.id, dev, _tap("b0", ok), Relay(), now)
    allow = Relay(taps.TapDecision(True, module="m1"))
    wanted = [_tap("b0", ok), _tap("b1", ok), _tap("b2", lost), _tap("b3", "NOPE"), _tap("b1", ok)]

    with session_factory() as s, tenant_scope(tenant.id):
        ref = services.resolve(s, dev)
        assert ref is not None
        batch = taps.TapBatch(s, [(ref, t) for t in wanted])
        got = [taps.decide(s, ref, t, allow, now=now, batch=batch) for t in wanted]
        batch.write(s)
        s.commit()
        rows = s.scalars(select(DeviceTap.req_id).where(DeviceTap.device_pk == ref.pk)).all()

    assert [(o.allow, o.reason, o.replayed) for o in got] == [
        (earlier.allow, earlier.reason, True),  # decided before the batch: its first answer
        (True, "OK", False),
        (False, "CARD_LOST", False),
        (False, "CARD_UNKNOWN", False),
        (True, "OK", True),  # the same request twice in one batch: decided once
    ]
    assert sorted(rows) == ["b0", "b1", "b2", "b3"]
    assert len(allow.seen) == 1


def _bridge(sessions: sessionmaker[Session]) -> Any:
    from onecard.platform.devices.bridge import Bridge, Connection
    from onecard.platform.secrets import SecretBox

    bridge = Bridge(sessions, Connection(), box=SecretBox("taps-secret-0123456789abcdef"))
    bridge.sent = []  # type: ignore[attr-defined]
    bridge.send = lambda device_id, message: bridge.sent.append(message)  # type: ignore[attr-defined,method-assign]
    return bridge


@pytest.mark.postgres_only
def test_a_tap_batch_on_a_connection_the_server_dropped_is_decided_on_a_new_one(
    make_tenant: Any, session_factory: sessionmaker[Session], database_url: str, now: datetime
) -> None:
    """Whichever statement of a tap chunk finds the connection dead first (the device
    registry's read, or with the device cached the tap's own transaction), the connection
    is replaced and the tap decided on the new one."""
    from onecard.platform.db.engine import make_engine, make_session_factory

    tenant = make_tenant()
    dev, ok, _lost = _setup(session_factory, tenant.id, now)
    engine = make_engine(database_url, hot_path=True, pool_size=1)
    admin = make_engine(database_url)
    try:
        bridge = _bridge(make_session_factory(engine))
        # One tap: its own statements; two: a batch, whose reads go to the server together
        # on the driver's connection (`read_together`), outside SQLAlchemy's statements.
        for n, (cached, size) in enumerate([(False, 1), (True, 1), (True, 2)]):
            if not cached:
                bridge._refs.clear()  # the chunk's first statement: the registry's read
            pid = bridge.transaction(lambda s: s.scalar(text("SELECT pg_backend_pid()")))
            with admin.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                other.commit()
            bridge.handle_taps([(dev, encode(_tap(f"dead-{n}-{i}", ok))) for i in range(size)])
            assert bridge.counts[("bridge", "retried")] == n + 1
        assert [(m.req_id, m.reason.value) for m in bridge.sent] == [
            ("dead-0-0", "NO_HANDLER"),
            ("dead-1-0", "NO_HANDLER"),
            ("dead-2-0", "NO_HANDLER"),
            ("dead-2-1", "NO_HANDLER"),
        ]
    finally:
        engine.dispose()
        admin.dispose()


@pytest.mark.postgres_only
def test_a_request_decided_elsewhere_meanwhile_is_answered_with_that_decision(
    make_tenant: Any,
    session_factory: sessionmaker[Session],
    now: datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another bridge records the same request between this tap's replay check and its
    write: the insert finds the unique ``(device, req_id)`` taken and the tap is answered
    with the decision recorded first, once."""
    tenant = make_tenant()
    dev, ok, _lost = _setup(session_factory, tenant.id, now)
    bridge = _bridge(session_factory)
    original = taps._finish

    def decided_elsewhere_first(session: Session, d: Any, tap: Any, *a: Any, **k: Any) -> Any:
        with session_factory() as other, tenant_scope(tenant.id):  # after the replay check
            other.add(
                DeviceTap(
                    device_pk=d.pk, req_id=tap.req_id, card_no=ok, card_id=None, allow=True,
                    reason="OK", amount_fen=None, entry_ids=[],
                    reply={"v": 1, "req_id": tap.req_id, "allow": True, "reason": "OK",
                           "display": "first"},
                    decided_at=now,
                )
            )  # fmt: skip
            other.commit()
        return original(session, d, tap, *a, **k)

    monkeypatch.setattr(taps, "_finish", decided_elsewhere_first)
    bridge.handle_taps([(dev, encode(_tap("race-1", ok)))])
    assert [(m.req_id, m.allow, m.display) for m in bridge.sent] == [("race-1", True, "first")]
    with session_factory() as s, tenant_scope(tenant.id):
        count = s.scalar(select(func.count()).where(DeviceTap.req_id == "race-1"))
    assert count == 1


@pytest.mark.postgres_only
def test_a_batch_whose_request_was_decided_elsewhere_commits_nothing_and_answers_each_once(
    make_tenant: Any,
    session_factory: sessionmaker[Session],
    now: datetime,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another bridge records one of a batch's requests after the batch's reads: the batch's
    rows and its COMMIT, sent together (`write_last`), fail on the unique ``(device, req_id)``
    and commit none of its rows; each tap is then decided on its own, the raced one answered
    with the decision recorded first."""
    tenant = make_tenant()
    dev, ok, lost = _setup(session_factory, tenant.id, now)
    bridge = _bridge(session_factory)
    original = taps.TapBatch.write

    def decided_elsewhere_first(batch: taps.TapBatch, session: Session) -> None:
        with session_factory() as other, tenant_scope(tenant.id):
            ref = services.resolve(other, dev)
            assert ref is not None
            other.add(
                DeviceTap(
                    device_pk=ref.pk, req_id="race-b", card_no=ok, card_id=None, allow=True,
                    reason="OK", amount_fen=None, entry_ids=[],
                    reply={"v": 1, "req_id": "race-b", "allow": True, "reason": "OK",
                           "display": "first"},
                    decided_at=now,
                )
            )  # fmt: skip
            other.commit()
        original(batch, session)

    monkeypatch.setattr(taps.TapBatch, "write", decided_elsewhere_first)
    chunk = [_tap("race-a", lost), _tap("race-b", ok)]
    bridge.handle_taps([(dev, encode(t)) for t in chunk])
    assert "a batch of 2 taps failed; one by one" in caplog.text
    assert [(m.req_id, m.allow, m.reason.value, m.display) for m in bridge.sent] == [
        ("race-a", False, "CARD_LOST", "Card reported lost"),
        ("race-b", True, "OK", "first"),
    ]
    with session_factory() as s, tenant_scope(tenant.id):
        rows = s.execute(
            select(DeviceTap.req_id, func.count())
            .where(DeviceTap.req_id.in_(["race-a", "race-b"]))
            .group_by(DeviceTap.req_id)
        ).all()
    assert sorted(rows) == [("race-a", 1), ("race-b", 1)]
