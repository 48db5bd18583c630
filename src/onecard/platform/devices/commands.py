"""Remote commands (``down/cmd``) and their results (``up/receipt``).

An operator's command is stored ``pending``; the bridge's outbox publishes it and marks it
``sent``; the device's receipt completes it (``done`` or ``failed``). A ``resend_records``
result naming ranges that are gone marks them lost in the ingest progress.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.device_agents.protocol.codes import CommandName
from onecard.platform.actors import Actor
from onecard.platform.audit.record import record
from onecard.platform.db.tenancy import tenant_scope, unscoped
from onecard.platform.devices.models import Device, DeviceCommand
from onecard.platform.devices.wire import Command
from onecard.platform.errors import NotFound, ValidationFailed

OPERATOR_COMMANDS = frozenset(c.value for c in CommandName) - {CommandName.ERROR.value}


@dataclass(frozen=True)
class Outgoing:
    """A command ready to publish."""

    tenant_id: int
    device_id: str
    message: Command


def send(
    session: Session,
    device: Device,
    name: str,
    args: dict[str, Any],
    *,
    actor: Actor,
    now: datetime,
) -> DeviceCommand:
    """Queue command ``name`` for ``device`` (published by the bridge); audited."""
    actor.ensure("devices.manage")
    if name not in OPERATOR_COMMANDS:
        raise ValidationFailed(f"unknown command {name}", field="name")
    cmd = DeviceCommand(
        device_pk=device.id,
        cmd_id=uuid.uuid4().hex,
        name=name,
        args=dict(args),
        status="pending",
        requested_by=f"{actor.type}:{actor.id}",
        created_at=now,
    )
    session.add(cmd)
    session.flush()
    record(
        session,
        "device.command",
        actor=actor,
        now=now,
        object_type="device",
        object_id=device.device_id,
        data={"cmd_id": cmd.cmd_id, "name": name, "args": args},
    )
    return cmd


def due(session: Session, *, now: datetime, limit: int = 500) -> list[Outgoing]:
    """Pending commands of online devices, across tenants; marked ``sent`` (caller commits)."""
    with unscoped(reason="command outbox walks every tenant"):
        rows = session.execute(
            select(DeviceCommand.tenant_id, DeviceCommand.id)
            .join(Device, Device.id == DeviceCommand.device_pk)
            .where(DeviceCommand.status == "pending", Device.online)
            .order_by(DeviceCommand.id)
            .limit(limit)
        ).all()
    out = []
    for tid, cid in rows:
        with tenant_scope(tid):
            cmd = session.get(DeviceCommand, cid)
            device = session.get(Device, cmd.device_pk) if cmd else None
            if cmd is None or device is None or cmd.status != "pending":
                continue
            cmd.status, cmd.sent_at = "sent", now
            message = Command(cmd_id=cmd.cmd_id, name=CommandName(cmd.name), args=cmd.args)
            out.append(Outgoing(tid, device.device_id, message))
    session.flush()
    return out


def complete(
    session: Session,
    device_pk: int,
    cmd_id: str,
    ok: bool,
    result: dict[str, Any],
    *,
    now: datetime,
) -> DeviceCommand:
    """Record a device's result for ``cmd_id``."""
    cmd = session.scalar(
        select(DeviceCommand).where(
            DeviceCommand.cmd_id == cmd_id, DeviceCommand.device_pk == device_pk
        )
    )
    if cmd is None:
        raise NotFound(f"command {cmd_id} not found for this device")
    if cmd.status not in {"done", "failed"}:
        cmd.status, cmd.completed_at, cmd.result = ("done" if ok else "failed"), now, dict(result)
    session.flush()
    return cmd


def history(session: Session, device_pk: int, *, limit: int = 50) -> list[DeviceCommand]:
    """Recent commands of a device, newest first."""
    return list(
        session.scalars(
            select(DeviceCommand)
            .where(DeviceCommand.device_pk == device_pk)
            .order_by(DeviceCommand.id.desc())
            .limit(limit)
        )
    )
