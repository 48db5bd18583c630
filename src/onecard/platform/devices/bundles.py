"""Configuration bundles: compiled per device from its kind's schema, signed, published retained.

The body is the kind's defaults overlaid with the device's settings. Signing and verifying are
the shared protocol's (`onecard.device_agents.protocol.bundles`): the content hash is SHA-256
of the body's canonical JSON text and the tenant's Ed25519 key signs
``oc-config/v1|{device}|{version}|{sha256}``. The private key is stored sealed with
:class:`~onecard.platform.secrets.SecretBox`. :func:`message` re-verifies with the protocol's
``verify_bundle`` (what the agent runs) before anything is published, so an unsigned or altered
bundle never leaves the platform. A tenant has one active key, created on first use and kept
unique by the database even when several bridge workers or processes need it at once.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import and_, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from onecard.device_agents.protocol import bundles as pbundles
from onecard.device_agents.protocol.codes import ProtocolError
from onecard.device_agents.protocol.messages import ConfigBundle as ConfigMessage
from onecard.platform.actors import Actor
from onecard.platform.audit.record import record
from onecard.platform.db.counters import next_value
from onecard.platform.db.engine import is_postgres
from onecard.platform.db.tenancy import require_tenant_id
from onecard.platform.devices.models import ConfigBundle, Device, SigningKey
from onecard.platform.errors import ValidationFailed
from onecard.platform.secrets import SecretBox


@dataclass(frozen=True)
class DeviceKindSpec:
    """A device kind a module owns (``onecard_device_kinds``): defaults and required settings."""

    kind: str
    module: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    label: str = ""


ACTIVE_PREDICATE = text("active")
ONE_ACTIVE_KEY = "uq_device_signing_keys_one_active"
"""The partial unique index on ``device_signing_keys (tenant_id) WHERE active``."""
CREATE_ATTEMPTS = 3  # read, insert; a lost race re-reads the winner on the next attempt


class UnsignedBundle(RuntimeError):
    """A bundle's signature or hash does not verify: it must not be published."""


def content_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 hex of the body's canonical JSON text (`protocol.bundles.canonical_body`)."""
    return hashlib.sha256(pbundles.canonical_body(body).encode()).hexdigest()


def signing_key(session: Session, box: SecretBox, *, now: datetime) -> SigningKey:
    """The tenant's active signing key, created on first use; every caller gets the same one.

    The database keeps at most one active key per tenant (the partial unique index
    :data:`ONE_ACTIVE_KEY`, migration ``0007_bundle_key_unique``). A first use inserts its new
    key with ``ON CONFLICT DO NOTHING``: when a concurrent transaction created one first, the
    insert waits for it, inserts nothing, and the winner's key is read back and returned.
    """
    for _attempt in range(CREATE_ATTEMPTS):
        key = _active_key(session)
        if key is None:
            key = _insert_unless_active(session, _new_key_values(box, now=now))
        if key is not None:
            return key
    raise RuntimeError("the tenant's active signing key keeps being retired while read")


def _active_key(session: Session) -> SigningKey | None:
    """The active key of the tenant in scope, or ``None`` before its first use."""
    return session.scalar(
        select(SigningKey).where(SigningKey.active).order_by(SigningKey.id.desc()).limit(1)
    )


def _new_key_values(box: SecretBox, *, now: datetime) -> dict[str, Any]:
    """Column values of a fresh Ed25519 key for the tenant in scope (private half sealed)."""
    private = Ed25519PrivateKey.generate()
    raw_public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {
        "tenant_id": require_tenant_id(),
        "key_id": hashlib.sha256(raw_public).hexdigest()[:16],
        "public_key": base64.b64encode(raw_public).decode(),
        "private_sealed": box.seal(base64.b64encode(private.private_bytes_raw()).decode()),
        "active": True,
        "created_at": now,
    }


def _insert_unless_active(session: Session, values: Mapping[str, Any]) -> SigningKey | None:
    """Insert ``values`` as the active key; ``None`` when the tenant already has one.

    A conflicting insert by a concurrent, uncommitted transaction makes this statement wait
    for that transaction's end (PostgreSQL row lock on the index entry, SQLite's write lock).
    """
    dialect_insert = pg_insert if is_postgres(session) else sqlite_insert
    stmt = (
        dialect_insert(SigningKey)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["tenant_id"], index_where=ACTIVE_PREDICATE)
        .returning(SigningKey)
    )
    return session.scalars(stmt).one_or_none()


def public_key(session: Session, key_id: str) -> Ed25519PublicKey:
    """The public half of ``key_id`` (what agents are provisioned with)."""
    row = session.scalar(select(SigningKey).where(SigningKey.key_id == key_id))
    if row is None:
        raise UnsignedBundle(f"unknown signing key {key_id}")
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(row.public_key))


def public_key_hex(session: Session, box: SecretBox, *, now: datetime) -> str:
    """Hex of the tenant's active public key (`protocol.bundles.public_key_from_hex` input)."""
    key = signing_key(session, box, now=now)
    return base64.b64decode(key.public_key).hex()


def compile_body(device: Device, kinds: Mapping[str, DeviceKindSpec]) -> dict[str, Any]:
    """The configuration of ``device``: kind defaults overlaid with its own settings."""
    spec = kinds.get(device.kind, DeviceKindSpec(device.kind))
    settings = {**dict(spec.defaults), **device.settings}
    missing = [k for k in spec.required if k not in settings]
    if missing:
        raise ValidationFailed(f"device {device.device_id} needs setting {missing[0]}")
    return {"device_id": device.device_id, "kind": device.kind, "settings": settings}


def build(
    session: Session,
    device: Device,
    kinds: Mapping[str, DeviceKindSpec],
    *,
    box: SecretBox,
    actor: Actor,
    now: datetime,
) -> ConfigBundle:
    """Compile and sign the next bundle version of ``device`` (caller commits, then publishes)."""
    body = compile_body(device, kinds)
    version = next_value(session, f"device.{device.id}.config")
    key = signing_key(session, box, now=now)
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(box.open(key.private_sealed)))
    signed = pbundles.make_bundle(device.device_id, version, body, private, key_id=key.key_id)
    digest = signed.sha256
    bundle = ConfigBundle(
        device_pk=device.id,
        version=version,
        content_hash=digest,
        body=body,
        key_id=key.key_id,
        signature=signed.signature,
        created_at=now,
    )
    session.add(bundle)
    device.config_published = version
    record(
        session,
        "device.config_built",
        actor=actor,
        now=now,
        object_type="device",
        object_id=device.device_id,
        data={"version": version, "hash": digest},
    )
    session.flush()
    return bundle


def message(session: Session, device_id: str, bundle: ConfigBundle) -> ConfigMessage:
    """The ``down/config`` message of ``bundle``; :class:`UnsignedBundle` unless it verifies."""
    try:
        msg = ConfigMessage(
            device=device_id,
            version=bundle.version,
            sha256=bundle.content_hash,
            body=pbundles.canonical_body(bundle.body),
            signature=bundle.signature,
            key_id=bundle.key_id,
        )
    except ValueError as exc:
        raise UnsignedBundle(f"bundle is not well formed: {type(exc).__name__}") from None
    verify(msg, device_id=device_id, key=public_key(session, bundle.key_id))
    return msg


def verify(msg: ConfigMessage, *, device_id: str, key: Ed25519PublicKey) -> dict[str, Any]:
    """`protocol.bundles.verify_bundle` (what the agent runs); :class:`UnsignedBundle` if bad."""
    try:
        return pbundles.verify_bundle(msg, key, device=device_id)
    except ProtocolError as exc:
        raise UnsignedBundle(f"bundle does not verify: {exc.reason.value}") from None


def latest(session: Session, device_pk: int) -> ConfigBundle | None:
    """The newest bundle of a device."""
    return latest_many(session, [device_pk]).get(device_pk)


def latest_many(session: Session, device_pks: Sequence[int]) -> dict[int, ConfigBundle]:
    """:func:`latest` of several devices (those with a bundle), in one query."""
    if not device_pks:
        return {}
    newest = (
        select(ConfigBundle.device_pk, func.max(ConfigBundle.version).label("version"))
        .where(ConfigBundle.device_pk.in_(sorted(set(device_pks))))
        .group_by(ConfigBundle.device_pk)
        .subquery()
    )
    rows = session.scalars(
        select(ConfigBundle).join(
            newest,
            and_(
                ConfigBundle.device_pk == newest.c.device_pk,
                ConfigBundle.version == newest.c.version,
            ),
        )
    )
    return {b.device_pk: b for b in rows}


def unpublished(session: Session) -> list[tuple[int, str, int, int]]:
    """``(tenant, device id, version, device pk)`` of devices whose newest bundle they lack."""
    from onecard.platform.db.tenancy import unscoped

    with unscoped(reason="bridge publishes bundles of every tenant"):
        rows = session.execute(
            select(Device.tenant_id, Device.device_id, Device.config_published, Device.id).where(
                Device.config_published > Device.config_version, Device.enabled
            )
        ).all()
    return [(r[0], r[1], r[2], r[3]) for r in rows]
