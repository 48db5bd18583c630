"""``/devices``: registry, credentials, health, commands; list receipts; communication tasks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from onecard.platform.cards import lifecycle
from onecard.platform.devices import commands, health, ingest, lists, services, tasks
from onecard.platform.devices.models import Device, DeviceCommand, DeviceTask
from onecard.web.api.base import Call, Out, QueryModel, dump, endpoint, paged

DEV = r"^[a-z0-9-]{3,64}$"


class DeviceIn(BaseModel):
    """A device to register."""

    model_config = ConfigDict(extra="forbid", strict=True)
    device_id: str = Field(pattern=DEV)
    kind: str = Field(min_length=2, max_length=40)
    module: str | None = Field(default=None, max_length=40)
    site_id: int | None = None
    name: str = Field(default="", max_length=200)
    group: str = Field(default="", max_length=40)
    settings: dict[str, Any] = Field(default_factory=dict)


class DevicePatch(BaseModel):
    """Editable fields of a device."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str | None = Field(default=None, max_length=200)
    site_id: int | None = None
    group: str | None = Field(default=None, max_length=40)
    enabled: bool | None = None
    settings: dict[str, Any] | None = None


class DeviceOut(Out):
    """A device and its last reported state."""

    device_id: str
    kind: str
    module: str | None
    site_id: int | None
    name: str
    group: str
    enabled: bool
    online: bool
    last_seen_at: datetime | None
    last_heartbeat_at: datetime | None
    firmware: str
    epoch: int | None
    config_version: int
    config_published: int
    clock_offset_ms: int | None
    unsent: int | None
    storage_used: int | None
    storage_total: int | None
    credentials_rotated_at: datetime


class CommandIn(BaseModel):
    """A remote command."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(max_length=40)
    args: dict[str, Any] = Field(default_factory=dict)


class CommandOut(Out):
    """A command and its result."""

    cmd_id: str
    name: str
    args: dict[str, Any]
    status: str
    requested_by: str
    created_at: datetime
    sent_at: datetime | None
    completed_at: datetime | None
    result: dict[str, Any]


class TaskIn(BaseModel):
    """A scheduled communication task."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=80)
    action: str = Field(pattern=r"^(collect_records|push_lists|sync_clock)$")
    times: list[str] = Field(min_length=1, max_length=48)
    selector: dict[str, Any] = Field(default_factory=dict)


class TaskOut(Out):
    """A task."""

    id: int
    name: str
    action: str
    selector: dict[str, Any]
    times: list[Any]
    enabled: bool
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_result: dict[str, Any]


class DevicesQuery(QueryModel):
    """Filters of the device list."""

    kind: str | None = Field(default=None, max_length=40)
    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0)


class ReceiptsQuery(QueryModel):
    """Which card."""

    card_id: int


def _device(call: Call) -> Device:
    return services.get_device(call.session, call.path["dev"])


@endpoint(
    "GET",
    "/devices",
    tag="devices",
    query=DevicesQuery,
    response=DeviceOut,
    list_response=True,
    permission="devices.view",
)
def list_devices(call: Call) -> Any:
    """List devices (paginated)."""
    q: DevicesQuery = call.query
    found = services.list_devices(call.session, kind=q.kind)
    page = found[q.offset : q.offset + q.limit]
    return paged([dump(DeviceOut, d) for d in page], len(found), q.limit, q.offset)


@endpoint("POST", "/devices", tag="devices", body=DeviceIn, status=201)
def create_device(call: Call) -> Any:
    """Register a device; the response carries its MQTT password (shown once)."""
    spec = services.NewDevice(**call.body.model_dump())
    device, password = services.add_device(call.session, spec, actor=call.actor, now=call.now)
    return {**dump(DeviceOut, device), "mqtt": {"username": device.device_id, "password": password}}


@endpoint("GET", "/devices/{dev}", tag="devices", response=DeviceOut, permission="devices.view")
def get_device(call: Call) -> Any:
    """Read one device."""
    return dump(DeviceOut, _device(call))


@endpoint("PATCH", "/devices/{dev}", tag="devices", body=DevicePatch, response=DeviceOut)
def patch_device(call: Call) -> Any:
    """Change a device's name, site, group, settings, or disable it."""
    changes = call.body.model_dump(exclude_unset=True)
    device = services.update_device(
        call.session, _device(call), changes, actor=call.actor, now=call.now
    )
    return dump(DeviceOut, device)


@endpoint("POST", "/devices/{dev}/credentials/rotate", tag="devices")
def rotate_credentials(call: Call) -> Any:
    """Issue a new MQTT password for a device (shown once)."""
    device = _device(call)
    password = services.rotate_credentials(call.session, device, actor=call.actor, now=call.now)
    return {"username": device.device_id, "password": password}


@endpoint("GET", "/devices/{dev}/health", tag="devices", permission="devices.view")
def device_health(call: Call) -> Any:
    """Health with early warnings, and gaps in the uploaded records."""
    device = _device(call)
    h = health.assess(call.session, device, now=call.now)
    return {
        "device_id": h.device_id,
        "status": h.status,
        "online": h.online,
        "alerts": [a.__dict__ for a in h.alerts],
        "gaps": [
            {
                "epoch": g.epoch,
                "acked_upto": g.acked_upto,
                "highest_seen": g.highest_seen,
                "missing": [list(r) for r in g.missing],
                "lost": [list(r) for r in g.lost],
            }
            for g in ingest.gaps(call.session, device.id)
        ],
    }


@endpoint(
    "POST",
    "/devices/{dev}/commands",
    tag="devices",
    body=CommandIn,
    response=CommandOut,
    status=201,
)
def send_command(call: Call) -> Any:
    """Queue a remote command (the bridge publishes it when the device is online)."""
    cmd = commands.send(
        call.session, _device(call), call.body.name, call.body.args, actor=call.actor, now=call.now
    )
    return dump(CommandOut, cmd)


@endpoint(
    "GET",
    "/devices/{dev}/commands",
    tag="devices",
    response=CommandOut,
    list_response=True,
    permission="devices.view",
)
def list_commands(call: Call) -> Any:
    """Recent commands of a device."""
    rows: list[DeviceCommand] = commands.history(call.session, _device(call).id)
    return paged([dump(CommandOut, c) for c in rows], len(rows), 50, 0)


@endpoint(
    "GET",
    "/lists/card-blacklist/receipts",
    tag="devices",
    query=ReceiptsQuery,
    permission="cards.view",
)
def blacklist_receipts(call: Call) -> Any:
    """Per-device receipts of a card's blacklist change, and the devices not yet protected."""
    card = lifecycle.get_card(call.session, call.query.card_id, actor=call.actor)
    version, rows = lists.card_protection(call.session, card.id)
    items = [
        {
            "device_id": p.device_id,
            "online": p.online,
            "applied_version": p.applied_version,
            "protected": p.protected,
            "applied_at": p.applied_at.isoformat() if p.applied_at else None,
        }
        for p in rows
    ]
    return {
        "card_id": card.id,
        "version": version,
        "receipts": [i for i in items if i["protected"]],
        "not_yet_protected": [i["device_id"] for i in items if not i["protected"]],
    }


@endpoint(
    "GET",
    "/device-tasks",
    tag="devices",
    response=TaskOut,
    list_response=True,
    permission="devices.view",
)
def list_tasks(call: Call) -> Any:
    """Scheduled communication tasks."""
    rows: list[DeviceTask] = tasks.list_tasks(call.session)
    return paged([dump(TaskOut, t) for t in rows], len(rows), 200, 0)


@endpoint("POST", "/device-tasks", tag="devices", body=TaskIn, response=TaskOut, status=201)
def create_task(call: Call) -> Any:
    """Define a scheduled task for a group of devices."""
    b: TaskIn = call.body
    spec = tasks.NewTask(b.name, b.action, tuple(b.times), b.selector)
    return dump(TaskOut, tasks.create_task(call.session, spec, actor=call.actor, now=call.now))
