"""The device registry: add, read, change, disable devices and rotate their credentials.

A device id is the MQTT username and is unique across tenants; the bridge resolves a topic's
device to its tenant with :func:`resolve` (the only cross-tenant read, documented there).
Operator actions need ``devices.manage`` and are audited.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.platform.actors import Actor
from onecard.platform.audit.record import record
from onecard.platform.db.sql import DIALECTS, in_values
from onecard.platform.db.tenancy import unscoped
from onecard.platform.devices.credentials import mosquitto_hash, new_password
from onecard.platform.devices.models import Device
from onecard.platform.errors import Conflict, NotFound, ValidationFailed
from onecard.platform.tenants.models import Site

DEVICE_ID_RE = re.compile(r"^[a-z0-9-]{3,64}$")
KIND_RE = re.compile(r"^[a-z][a-z0-9_.-]{1,39}$")
MANAGE = "devices.manage"
RESERVED_IDS = frozenset({"bridge", "platform", "onecard-bridge"})
_generation = [0]  # bumped on every registry change in this process (the bridge's resolve cache)


def generation() -> int:
    """A number that changes whenever this process changes a device's registry entry."""
    return _generation[0]


def _changed() -> None:
    _generation[0] += 1


@dataclass(frozen=True)
class NewDevice:
    """What an operator gives to register a terminal."""

    device_id: str
    kind: str
    module: str | None = None
    site_id: int | None = None
    name: str = ""
    group: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceRef:
    """What the bridge needs to know about the sender of a message."""

    pk: int
    device_id: str
    tenant_id: int
    kind: str
    module: str | None
    enabled: bool
    clock_offset_ms: int | None
    site_id: int | None = None


def add_device(
    session: Session, spec: NewDevice, *, actor: Actor, now: datetime
) -> tuple[Device, str]:
    """Register a device; returns it with its first password (shown once, stored hashed)."""
    actor.ensure(MANAGE)
    _validate(session, spec)
    password = new_password()
    device = Device(
        device_id=spec.device_id,
        kind=spec.kind,
        module=spec.module,
        site_id=spec.site_id,
        name=spec.name,
        group=spec.group,
        settings=dict(spec.settings),
        password_hash=mosquitto_hash(password),
        credentials_rotated_at=now,
        created_at=now,
    )
    session.add(device)
    session.flush()
    record(
        session,
        "device.added",
        actor=actor,
        now=now,
        object_type="device",
        object_id=device.device_id,
        data={"kind": spec.kind, "module": spec.module, "site_id": spec.site_id},
    )
    return device, password


def _validate(session: Session, spec: NewDevice) -> None:
    if not DEVICE_ID_RE.match(spec.device_id) or spec.device_id in RESERVED_IDS:
        raise ValidationFailed("device id must be 3-64 of a-z, 0-9 and '-'", field="device_id")
    if not KIND_RE.match(spec.kind):
        raise ValidationFailed("kind must be a short lower-case name", field="kind")
    if spec.site_id is not None and session.get(Site, spec.site_id) is None:
        raise ValidationFailed(f"site {spec.site_id} not found", field="site_id")
    with unscoped(reason="device ids are unique across tenants (they are MQTT usernames)"):
        taken = session.scalar(select(Device.id).where(Device.device_id == spec.device_id))
    if taken is not None:
        raise Conflict(f"device id {spec.device_id} is taken", field="device_id")


def get_device(session: Session, device_id: str) -> Device:
    """The device ``device_id`` of the tenant in scope; :class:`NotFound` otherwise."""
    device = session.scalar(select(Device).where(Device.device_id == device_id))
    if device is None:
        raise NotFound(f"device {device_id} not found")
    return device


def list_devices(session: Session, *, kind: str | None = None) -> list[Device]:
    """Devices of the tenant in scope, by device id."""
    stmt = select(Device).order_by(Device.device_id)
    if kind:
        stmt = stmt.where(Device.kind == kind)
    return list(session.scalars(stmt))


EDITABLE = frozenset({"name", "site_id", "group", "enabled", "settings", "module"})


def update_device(
    session: Session, device: Device, changes: dict[str, Any], *, actor: Actor, now: datetime
) -> Device:
    """Change the editable fields of ``device`` (name, site, group, enabled, settings)."""
    actor.ensure(MANAGE)
    unknown = set(changes) - EDITABLE
    if unknown:
        raise ValidationFailed(f"field {sorted(unknown)[0]} cannot be changed")
    site_id = changes.get("site_id")
    if site_id is not None and session.get(Site, site_id) is None:
        raise ValidationFailed(f"site {site_id} not found", field="site_id")
    before = {k: getattr(device, k) for k in changes}
    for key, value in changes.items():
        setattr(device, key, value)
    _changed()
    record(
        session,
        "device.changed",
        actor=actor,
        now=now,
        object_type="device",
        object_id=device.device_id,
        data={"before": before, "after": changes},
    )
    session.flush()
    return device


def rotate_credentials(session: Session, device: Device, *, actor: Actor, now: datetime) -> str:
    """Issue a new password for ``device`` (the old one stops working at the next broker reload)."""
    actor.ensure(MANAGE)
    password = new_password()
    device.password_hash = mosquitto_hash(password)
    device.credentials_rotated_at = now
    _changed()
    record(
        session,
        "device.credentials_rotated",
        actor=actor,
        now=now,
        object_type="device",
        object_id=device.device_id,
    )
    session.flush()
    return password


def resolve(session: Session, device_id: str) -> DeviceRef | None:
    """The registry entry behind an MQTT username, across tenants; ``None`` when unknown.

    This is where the bridge learns a message's tenant: from the registry, never the payload.
    """
    return resolve_many(session, [device_id]).get(device_id)


_REF_COLUMNS = (
    Device.id,
    Device.device_id,
    Device.tenant_id,
    Device.kind,
    Device.module,
    Device.enabled,
    Device.clock_offset_ms,
    Device.site_id,
)


# Built once per dialect: the bridge resolves devices for every chunk of messages.
_REFS_BY = {
    dialect: select(*_REF_COLUMNS).where(in_values(Device.device_id, "ids", dialect))
    for dialect in DIALECTS
}


def resolve_many(session: Session, device_ids: Sequence[str]) -> dict[str, DeviceRef]:
    """:func:`resolve` of several devices, one query per 500; unknown ids are left out."""
    stmt = _REFS_BY[session.get_bind().dialect.name]
    ids = sorted(set(device_ids))
    out: dict[str, DeviceRef] = {}
    with unscoped(reason="bridge: find the tenant of a topic's device"):
        for i in range(0, len(ids), 500):
            for r in session.execute(stmt, {"ids": ids[i : i + 500]}):
                out[r.device_id] = DeviceRef(*r)
    return out


def all_credentials(session: Session) -> list[tuple[str, str, bool]]:
    """``(device id, $7$ hash, enabled)`` of every device of every tenant (broker password file)."""
    with unscoped(reason="the broker's password file covers every tenant"):
        rows = session.execute(
            select(Device.device_id, Device.password_hash, Device.enabled).order_by(
                Device.device_id
            )
        )
        return [(r[0], r[1], r[2]) for r in rows]
