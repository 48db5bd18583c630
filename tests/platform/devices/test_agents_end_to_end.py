"""The real agent runtime (simulator fleet) against the real bridge over a private Mosquitto
with TLS, password file and ACL; devices registered through the platform's services."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from onecard.device_agents.protocol.blacklist import credential_key
from onecard.device_agents.protocol.codes import CredentialKind, DeviceKind, ReasonCode
from onecard.device_agents.runtime.agent import LocalDecision, Presented
from onecard.device_agents.runtime.mqtt import BrokerAddress
from onecard.device_agents.sim.fleet import Fleet, FleetSettings
from onecard.platform.actors import Actor
from onecard.platform.cards.lifecycle import NewCard, issue_card, report_loss
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices import lists
from onecard.platform.devices.models import DeviceRecord
from onecard.platform.people.schemas import PersonCreate
from onecard.platform.people.services import create_person

SYS = Actor.system("tests")
WAIT = 60.0


def wait_until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, f"not reached in time: {what}"
        time.sleep(0.1)


def test_fleet_uploads_exactly_once_gets_loss_reports_and_online_decisions(
    tls_broker: Any,
    fleet: Any,
    start_bridge: Any,
    session_factory: Any,
    now: datetime,
    tmp_path: Path,
) -> None:
    registered = fleet(tls_broker, 3, kind="pos")  # platform services + password file + ACL
    bridge = start_bridge(tls_broker, group=f"e2e{uuid.uuid4().hex[:8]}")
    creds = {d: (d, pw, DeviceKind.POS) for d, pw in registered.passwords.items()}
    sim = Fleet(
        FleetSettings(
            devices=3,
            kinds=(DeviceKind.POS,),
            broker=BrokerAddress(tls_broker.host, tls_broker.port, tls_ca=tls_broker.tls_ca),
            folder=tmp_path / "fleet",
            credentials=creds,
            tap_rate=0.001,
            agent={"heartbeat_s": 2.0},
        )
    )
    sim.taps = False
    # Offline first: every terminal decides taps alone and stores them as records.
    for i, terminal in enumerate(sim.terminals):
        for n in range(5 + i):
            terminal.agent.present(Presented.uid(f"{0x20000000 + n:08x}", 100 + n))
    created = (
        sim.totals()["records_created"]
        if False
        else sum(t.counters.records_created for t in sim.terminals)
    )
    assert created == 18
    sim.start()
    try:
        assert sim.drain(WAIT), "records not all acknowledged"

        def platform_count() -> int:
            with session_factory() as s, tenant_scope(registered.tenant.id):
                return int(s.scalar(select(func.count()).select_from(DeviceRecord)) or 0)

        assert platform_count() == sim.totals()["records_created"] == created
        wait_until(lambda: sim.online() == 3, "all terminals online")

        # A loss report reaches every online terminal; their receipts are recorded.
        with session_factory() as s, tenant_scope(registered.tenant.id):
            person = create_person(
                s,
                PersonCreate(
                    person_no=f"P{uuid.uuid4().hex[:8]}", name="A", identity_class="staff"
                ),
                actor=SYS,
                now=now,
            )
            card = issue_card(
                s,
                person,
                NewCard(card_no=f"{uuid.uuid4().int % 10**9:09d}", uid="1A2B3C4D"),
                actor=SYS,
                now=now,
            )
            s.commit()
            report_loss(s, card, actor=SYS, now=now)
            s.commit()
            card_id = card.id
        key = credential_key(CredentialKind.UID, "1A2B3C4D")

        def holding() -> int:
            return int(
                sim.loop.call(
                    lambda: sum(key in t.agent.lists.get("blacklist", ()) for t in sim.terminals)
                )
            )

        wait_until(lambda: holding() == 3, "every terminal holds the lost card")

        def protected() -> bool:
            with session_factory() as s, tenant_scope(registered.tenant.id):
                _v, rows = lists.card_protection(s, card_id)
                return len(rows) == 3 and all(r.protected and r.applied_at for r in rows)

        wait_until(protected, "receipts of every terminal recorded")

        # An online tap gets the platform's decision.
        got: list[LocalDecision] = []
        done = threading.Event()

        def tap() -> None:
            sim.terminals[0].agent.present(
                Presented.uid("1a2b3c4d"), lambda d: (got.append(d), done.set())
            )

        sim.loop.call(tap)
        assert done.wait(WAIT)
        assert got[0].online
        assert not got[0].allow
        assert got[0].reason is ReasonCode.CARD_LOST
    finally:
        sim.stop()
    assert not bridge.invalid_sent
