"""A device's list-state row, remembered by the session, after a savepoint that made it rolls
back (the bridge routes each message in a savepoint; a failed route must not leave later
routes of the same chunk a row the database no longer has)."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onecard.platform.actors import Actor
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices import lists, services
from onecard.platform.devices.models import DeviceListState

SYS = Actor.system("tests")


def test_a_state_row_made_in_a_rolled_back_savepoint_is_not_used_afterwards(
    make_tenant: Any, session_factory: sessionmaker[Session], now: datetime
) -> None:
    tenant = make_tenant()
    with session_factory() as s, tenant_scope(tenant.id):
        device, _pw = services.add_device(
            s, services.NewDevice("ls-door-1", "door"), actor=SYS, now=now
        )
        s.commit()
        pk = device.id
        with contextlib.suppress(RuntimeError), s.begin_nested():
            lists.device_gap(s, pk, lists.BLACKLIST, 3, now=now)  # the row is made here
            raise RuntimeError("the route failed after it")
        lists.device_gap(s, pk, lists.BLACKLIST, 5, now=now)
        s.commit()
    with session_factory() as s, tenant_scope(tenant.id):
        rows = s.execute(
            select(DeviceListState.applied_version, DeviceListState.sent_version).where(
                DeviceListState.device_pk == pk
            )
        ).all()
    assert rows == [(5, 5)]
