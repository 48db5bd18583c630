"""The bridge's device cache is renewed ahead of expiry for devices it hears from: a change to
the registry made by another process (the console, another bridge) reaches it within the
refresh, and a busy device's taps never wait for a registry read."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from onecard.device_agents.protocol.codes import CredentialKind, ReasonCode
from onecard.device_agents.protocol.messages import Credential, TapDecision, TapRequest
from onecard.platform.actors import Actor
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices.bridge import Bridge, Connection
from onecard.platform.devices.models import Device
from onecard.platform.devices.services import NewDevice, add_device
from onecard.platform.devices.wire import encode
from onecard.platform.secrets import SecretBox
from onecard.platform.tenants.models import Tenant
from onecard.testing.fixtures import unique

TTL = 1.5  # long enough that a slow machine does not let an entry expire mid-test


@pytest.fixture
def devices(session: Session, tenant: Tenant, system_actor: Actor, now: Any) -> list[str]:
    ids = [unique("cache-").lower() for _ in range(3)]
    with tenant_scope(tenant.id):
        for device_id in ids:
            add_device(session, NewDevice(device_id, "door"), actor=system_actor, now=now)
    session.commit()
    return ids


@pytest.fixture
def bridge(session_factory: sessionmaker[Session]) -> Bridge:
    b = Bridge(
        session_factory,
        Connection(),
        box=SecretBox("cache-secret-0123456789abcdef"),
        resolve_ttl=TTL,
    )
    b.decisions = []  # type: ignore[attr-defined]
    b.send = lambda _device_id, message: b.decisions.append(message)  # type: ignore[attr-defined,method-assign]
    return b


@pytest.fixture
def device_reads(engine: Engine) -> Iterator[list[str]]:
    """Statements that read the device registry, as they reach the database."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_a: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM devices" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    yield seen
    event.remove(engine, "before_cursor_execute", before)


def tap(bridge: Bridge, device_id: str, n: int) -> TapDecision:
    request = TapRequest(
        req_id=f"r{n:06d}",
        credential=Credential(kind=CredentialKind.UID, value="0A0B0C0D"),
        device_time=int(time.time() * 1000),
    )
    bridge.handle_taps([(device_id, encode(request))])
    decision = bridge.decisions[-1]  # type: ignore[attr-defined]
    assert isinstance(decision, TapDecision)
    return decision


def disable_behind_the_bridges_back(session: Session, device_id: str) -> None:
    """As another process would: no event in this process tells the bridge."""
    session.execute(update(Device).where(Device.device_id == device_id).values(enabled=False))
    session.commit()


def test_a_busy_devices_entry_is_renewed_with_the_registrys_current_row(
    bridge: Bridge, devices: list[str], session: Session, device_reads: list[str]
) -> None:
    busy = devices[0]
    assert tap(bridge, busy, 1).reason is not ReasonCode.DEVICE_DISABLED
    disable_behind_the_bridges_back(session, busy)
    # Within the entry's life the cache answers (that is what it is for).
    assert tap(bridge, busy, 2).reason is not ReasonCode.DEVICE_DISABLED

    time.sleep(TTL * 0.6)  # now due: it expires within half the TTL
    assert bridge.refresh_refs() == 1
    device_reads.clear()
    assert tap(bridge, busy, 3).reason is ReasonCode.DEVICE_DISABLED
    assert device_reads == []  # the tap itself read no registry row


def test_devices_not_heard_from_since_the_last_refresh_are_not_read(
    bridge: Bridge, devices: list[str], device_reads: list[str]
) -> None:
    for n, device_id in enumerate(devices):
        tap(bridge, device_id, n)
    time.sleep(TTL * 0.6)
    assert bridge.refresh_refs() == 3
    tap(bridge, devices[0], 10)  # only this one is heard from again
    time.sleep(TTL * 0.6)
    device_reads.clear()
    assert bridge.refresh_refs() == 1
    assert len(device_reads) == 1  # one query, for the one device
    assert bridge.refresh_refs() == 0  # nobody heard from since
