"""Records stored by the ingest's bulk path (``COPY`` on PostgreSQL, the driver's
``executemany`` on SQLite) look in the database exactly as rows the ORM writes: the same text
form of a timestamp on SQLite (string comparisons in SQL depend on it), the same values."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from onecard.platform.actors import Actor
from onecard.platform.db.engine import make_engine, make_session_factory
from onecard.platform.db.migrate import upgrade
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices import ingest
from onecard.platform.devices.services import NewDevice, add_device, resolve
from onecard.platform.devices.wire import decode_records
from onecard.platform.tenants.models import Tenant
from onecard.platform.tenants.services import create_tenant
from onecard.testing.fixtures import unique

# A whole second: Python's own isoformat leaves the microseconds out of such a time.
NOW = datetime(2026, 11, 26, 8, 30, 0, tzinfo=UTC)
ACTOR = Actor.system("test")


def upload(session: Session, device_id: str, records: list[dict[str, Any]]) -> ingest.Ingested:
    payload = json.dumps({"v": 1, "epoch": "e0000001", "records": records}).encode()
    device = resolve(session, device_id)
    assert device is not None
    done = ingest.ingest(session, device, decode_records(payload), now=NOW)
    session.commit()
    return done


def test_bulk_stored_timestamps_have_the_orms_form(
    session: Session, tenant: Tenant, system_actor: Actor
) -> None:
    device_id = unique("ingest-").lower()
    with tenant_scope(tenant.id):
        add_device(session, NewDevice(device_id, "door"), actor=system_actor, now=NOW)
    session.commit()
    device_time = int(NOW.timestamp() * 1000)
    done = upload(
        session,
        device_id,
        [
            {"epoch": "e0000001", "seq": 1, "device_time": device_time, "flags": ["offline"]},
            {"epoch": "e0000001", "seq": 2, "device_time": device_time + 250},
        ],
    )
    assert (done.stored, done.duplicates) == (2, 0)
    assert [r.seq for r in done.new] == [1, 2]

    records = session.execute(
        text(
            "SELECT r.received_at, r.corrected_time, e.updated_at, r.flags FROM device_records r"
            " JOIN device_epochs e ON e.device_pk = r.device_pk AND e.epoch = r.epoch"
            " JOIN devices d ON d.id = r.device_pk WHERE d.device_id = :d ORDER BY r.seq"
        ),
        {"d": device_id},
    ).all()
    # received_at (bulk path) and the epoch's updated_at (ORM) hold the same instant: NOW.
    assert [r[0] for r in records] == [records[0][2], records[0][2]]
    assert records[0][1] == records[0][2]  # device clock == NOW, no offset measured yet
    assert records[1][1] != records[0][1]
    flags = [r[3] if isinstance(r[3], list) else json.loads(r[3]) for r in records]
    assert flags == [["offline"], []]


def test_upgrade_rewrites_sqlite_stamps_of_the_old_form(tmp_path: Path) -> None:
    """Migration ``0008_sqlite_record_stamps``: records stored before it in the driver's form
    read back in the ORM's, and compare in SQL as the ORM's do."""
    engine = make_engine(f"sqlite:///{tmp_path / 'before-0008.db'}")
    upgrade(engine, "0007_bundle_key_unique")
    rows = [
        (1, "2026-11-26 08:30:00.250000+00:00", "2026-11-26 08:29:59+00:00"),
        (2, "2026-11-26 08:30:00+00:00", None),
        (3, "2026-11-26 08:30:01.000000", "2026-11-26 08:30:01.000000"),  # already right
    ]
    with make_session_factory(engine)() as s:
        tenant = create_tenant(s, unique("mig"), "Migration tenant", actor=ACTOR, now=NOW)
        with tenant_scope(tenant.id):
            device, _pw = add_device(s, NewDevice("mig-door-1", "door"), actor=ACTOR, now=NOW)
        s.commit()
        ids = {"t": tenant.id, "d": device.id}
    with engine.begin() as conn:
        for seq, received, corrected in rows:
            conn.execute(
                text(
                    "INSERT INTO device_records (tenant_id, device_pk, epoch, seq, type,"
                    " device_time, corrected_time, clock_valid, received_at, flags, payload)"
                    " VALUES (:t, :d, 'e1', :seq, 'tap', 0, :c, 1, :r, '[]', '{}')"
                ),
                {**ids, "seq": seq, "c": corrected, "r": received},
            )
    upgrade(engine)
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT received_at, corrected_time FROM device_records ORDER BY seq")
        ).all()
    assert [tuple(r) for r in stored] == [
        ("2026-11-26 08:30:00.250000", "2026-11-26 08:29:59.000000"),
        ("2026-11-26 08:30:00.000000", None),
        ("2026-11-26 08:30:01.000000", "2026-11-26 08:30:01.000000"),
    ]
