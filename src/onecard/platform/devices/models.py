"""Tables of the terminal device manager: registry, records, taps, lists, bundles, commands, tasks.

Every row is tenant-owned; the tenant of a device comes from this registry, never from a
payload. ``devices.device_id`` (the MQTT username) is unique across tenants so that the bridge
can find the tenant of a message from its topic alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from onecard.platform.db.base import Base, BigId, IdMixin
from onecard.platform.db.immutability import AppendOnly
from onecard.platform.db.tenancy import TenantScoped


class Device(IdMixin, TenantScoped, Base):
    """A terminal: kind, module, site, credentials and the last state it reported."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("device_id"),)

    device_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(40))
    module: Mapped[str | None] = mapped_column(String(40))
    site_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("sites.id"))
    name: Mapped[str] = mapped_column(String(200), default="")
    group: Mapped[str] = mapped_column(String(40), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    credentials_rotated_at: Mapped[datetime]
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]
    # What the device last told us (hello, heartbeat, state, receipts).
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    state_changed_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]
    last_heartbeat_at: Mapped[datetime | None]
    firmware: Mapped[str] = mapped_column(String(64), default="")
    epoch: Mapped[str | None] = mapped_column(String(64))
    config_version: Mapped[int] = mapped_column(default=0)
    config_published: Mapped[int] = mapped_column(default=0)
    clock_offset_ms: Mapped[int | None] = mapped_column(BigInteger)
    round_trip_ms: Mapped[int | None]
    unsent: Mapped[int | None]
    storage_used: Mapped[int | None] = mapped_column(BigInteger)
    storage_total: Mapped[int | None] = mapped_column(BigInteger)
    reader_state: Mapped[str] = mapped_column(String(40), default="")


class DeviceHeartbeat(IdMixin, TenantScoped, AppendOnly, Base):
    """One heartbeat as received: the series health trends are computed from."""

    __tablename__ = "device_heartbeats"
    __table_args__ = (Index("ix_device_heartbeats_dev_at", "device_pk", "received_at"),)

    device_pk: Mapped[int] = mapped_column(BigId, ForeignKey("devices.id"))
    received_at: Mapped[datetime]
    unsent: Mapped[int]
    storage_used: Mapped[int] = mapped_column(BigInteger)
    storage_total: Mapped[int | None] = mapped_column(BigInteger)
    clock_offset_ms: Mapped[int | None] = mapped_column(BigInteger)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DeviceEpoch(IdMixin, TenantScoped, Base):
    """Progress of one device store (epoch): highest contiguous seq stored and what is lost."""

    __tablename__ = "device_epochs"
    __table_args__ = (UniqueConstraint("device_pk", "epoch"),)

    device_pk: Mapped[int] = mapped_column(BigId, ForeignKey("devices.id"))
    epoch: Mapped[str] = mapped_column(String(64))
    acked_upto: Mapped[int] = mapped_column(BigInteger, default=0)
    highest_seen: Mapped[int] = mapped_column(BigInteger, default=0)
    lost: Mapped[list[Any]] = mapped_column(JSON, default=list)  # ranges the device says are gone
    first_seen_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class DeviceRecord(IdMixin, TenantScoped, AppendOnly, Base):
    """An offline record as the device stored it; ``(device, epoch, seq)`` is its identity."""

    __tablename__ = "device_records"
    __table_args__ = (UniqueConstraint("device_pk", "epoch", "seq"),)

    device_pk: Mapped[int] = mapped_column(BigId, ForeignKey("devices.id"))
    epoch: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(40))
    card_no: Mapped[str | None] = mapped_column(String(32), index=True)
    amount_fen: Mapped[int | None] = mapped_column(BigInteger)
    device_time: Mapped[int | None] = mapped_column(BigInteger)  # ms, device clock as sent
    corrected_time: Mapped[datetime | None]
    clock_valid: Mapped[bool] = mapped_column(Boolean, default=True)
    received_at: Mapped[datetime]
    flags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DeviceTap(IdMixin, TenantScoped, AppendOnly, Base):
    """An online tap decision; ``(device, req_id)`` makes a repeated request return the first.

    Append-only: the tap row is the fact of the decision (taps write no audit event).
    """

    __tablename__ = "device_taps"
    __table_args__ = (UniqueConstraint("device_pk", "req_id"),)

    device_pk: Mapped[int] = mapped_column(BigId, ForeignKey("devices.id"))
    req_id: Mapped[str] = mapped_column(String(64))
    card_no: Mapped[str] = mapped_column(String(32))
    card_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("cards.id"))
    allow: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(40))
    amount_fen: Mapped[int | None] = mapped_column(BigInteger)
    entry_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    reply: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    decided_at: Mapped[datetime]


class DeviceListState(IdMixin, TenantScoped, Base):
    """Which version of a list a device holds (applied) and was last sent."""

    __tablename__ = "device_list_states"
    __table_args__ = (UniqueConstraint("device_pk", "list_name"),)

    device_pk: Mapped[int] = mapped_column(BigId, ForeignKey("devices.id"))
    list_name: Mapped[str] = mapped_column(String(60))
    applied_version: Mapped[int] = mapped_column(default=0)
    applied_at: Mapped[datetime | None]
    sent_version: Mapped[int] = mapped_column(default=0)
    sent_at: Mapped[datetime | None]


class DeviceListReceipt(IdMixin, TenantScoped, AppendOnly, Base):
    """A device confirmed it applied ``list_name`` up to ``version``."""

    __tablename__ = "device_list_receipts"
    __table_args__ = (Index("ix_device_list_receipts_lookup", "list_name", "version"),)

    device_pk: Mapped[int] = mapped_column(BigId, ForeignKey("devices.id"))
    list_name: Mapped[str] = mapped_column(String(60))
    version: Mapped[int]
    received_at: Mapped[datetime]


class SigningKey(IdMixin, TenantScoped, Base):
    """The tenant's Ed25519 key for config bundles; the private half is sealed."""

    __tablename__ = "device_signing_keys"
    __table_args__ = (
        UniqueConstraint("tenant_id", "key_id"),
        # One active key per tenant (migration 0007): two first uses cannot both create one.
        Index(
            "uq_device_signing_keys_one_active",
            "tenant_id",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
    )

    key_id: Mapped[str] = mapped_column(String(40))
    public_key: Mapped[str] = mapped_column(String(100))
    private_sealed: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]


class ConfigBundle(IdMixin, TenantScoped, AppendOnly, Base):
    """A signed configuration bundle compiled for one device."""

    __tablename__ = "device_config_bundles"
    __table_args__ = (UniqueConstraint("device_pk", "version"),)

    device_pk: Mapped[int] = mapped_column(BigId, ForeignKey("devices.id"))
    version: Mapped[int]
    content_hash: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    key_id: Mapped[str] = mapped_column(String(40))
    signature: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class DeviceCommand(IdMixin, TenantScoped, Base):
    """A remote command to a device and its result."""

    __tablename__ = "device_commands"
    __table_args__ = (UniqueConstraint("tenant_id", "cmd_id"),)

    device_pk: Mapped[int] = mapped_column(BigId, ForeignKey("devices.id"), index=True)
    cmd_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(40))
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(10))  # pending | sent | done | failed
    requested_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DeviceTask(IdMixin, TenantScoped, Base):
    """A scheduled communication task for a group of devices (collect, push lists, sync)."""

    __tablename__ = "device_tasks"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    name: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(20))  # collect_records | push_lists | sync_clock
    selector: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # kind, site_id, group
    times: Mapped[list[Any]] = mapped_column(JSON, default=list)  # "HH:MM" UTC
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    next_run_at: Mapped[datetime | None]
    last_run_at: Mapped[datetime | None]
    last_result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]
