"""POS record MAC keys, held by the platform's key service (``onecard.keys.terminals``).

Each POS MACs its offline sale records with its own key: canteen's master record MAC key
diversified by the POS's device id, kept under the card application the tenant's layout plan
gives canteen (``canteen-record`` in the default plan). :func:`provision_pos_key` hands a POS its
key wrapped under that application's transport key; :func:`verify_record_macs` gets verdicts
from the key service. No POS key and no MAC computed by the platform is ever seen here.

Which key service: :func:`process_keyring`, the keyring the process wiring installed with
:func:`install_keyring`, else the one the process's settings name (``[keys]``, read the way
``onecard`` reads its configuration), opened once.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from onecard.config import load_settings
from onecard.keys.hsm import WrappedKeySet
from onecard.keys.layout import AppKind
from onecard.keys.service import TRANSPORT_KEY, KeyService
from onecard.keys.terminals import MAC_LEN, RECORD_MAC_KEY, MacCheck, terminal_factor
from onecard.modules.canteen.context import audit_event
from onecard.modules.canteen.models import Pos
from onecard.modules.canteen.services import KEY
from onecard.platform.actors import Actor
from onecard.platform.cards.keyring import Keyring, key_errors, load_plan
from onecard.platform.db.tenancy import require_tenant_id
from onecard.platform.errors import Conflict


@dataclass(frozen=True)
class RecordMac:
    """One record's MAC to check: the POS, the key version it says it used (``None``: the
    current one), the MACed bytes, and the MAC as uploaded (hex)."""

    device_id: str
    key_version: int | None
    message: bytes
    mac: str


# --- the process's keyring ---------------------------------------------------------------


class _Keyrings:
    """The installed keyring and the one opened from settings (at most one of each)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.installed: Keyring | None = None
        self.from_settings: Keyring | None = None


_rings = _Keyrings()


def install_keyring(ring: Keyring | None) -> None:
    """Make ``ring`` the keyring canteen uses in this process (``None``: back to settings)."""
    with _rings.lock:
        _rings.installed = ring


def process_keyring() -> Keyring:
    """The installed keyring, else the one ``[keys]`` of the process's settings names.

    Raises ``ConfigError`` (settings) or a key store error when neither can be had: the
    caller's work fails and the records stay stored for ``onecard canteen reprocess``.
    """
    with _rings.lock:
        if _rings.installed is not None:
            return _rings.installed
        if _rings.from_settings is None:
            _rings.from_settings = Keyring.from_settings(load_settings().keys)
        return _rings.from_settings


# --- where the keys live ------------------------------------------------------------------


def key_application(session: Session, *, now: datetime) -> str:
    """The card application holding canteen's POS keys: the first application the tenant's
    plan gives canteen with one diversification level (the POS factor)."""
    plan = load_plan(session, now=now)
    for app in sorted(plan.owned_by(KEY), key=lambda a: a.app_id):
        if app.kind is not AppKind.M1 and app.levels == 1:
            return app.app_id
    raise Conflict(
        "the card layout plan gives canteen no one-level application for POS keys",
        reason="key_unavailable",
    )


def provision_pos_key(
    session: Session, service: KeyService, pos: Pos, *, actor: Actor, now: datetime
) -> WrappedKeySet:
    """The POS's record MAC key, wrapped under the application's transport key for the
    provisioning device (which checks the KCV); generates the master and the transport key
    on a tenant's first POS. Audited ``canteen.pos.key_provisioned``."""
    actor.ensure("canteen.manage")
    tenant_id, app = require_tenant_id(), key_application(session, now=now)
    with key_errors():
        version = _ensure_master(service, tenant_id, app, RECORD_MAC_KEY, exportable=False)
        transport = _ensure_master(service, tenant_id, app, TRANSPORT_KEY, exportable=True)
        wrapped = service.card_personalisation(
            module=KEY,
            tenant_id=tenant_id,
            application=app,
            key_names=[RECORD_MAC_KEY],
            key_version=version,
            factors=[terminal_factor(pos.device_id)],
            transport_version=transport,
        )
    data = {"device": pos.device_id, "key_version": version, "kcv": wrapped.keys[0].kcv.hex()}
    audit_event(session, "canteen.pos.key_provisioned", pos.id, data, actor, now, obj="canteen_pos")
    return wrapped


def _ensure_master(
    service: KeyService, tenant_id: int, app: str, name: str, *, exportable: bool
) -> int:
    """The current version of master ``name``, generating version 1 when there is none."""
    if not service.versions(tenant_id=tenant_id, application=app, key_name=name):
        service.generate_master(
            module=KEY, tenant_id=tenant_id, application=app, key_name=name, exportable=exportable
        )
    return service.current_version(tenant_id=tenant_id, application=app, key_name=name)


# --- verifying ----------------------------------------------------------------------------


def verify_record_macs(
    session: Session, service: KeyService, macs: Sequence[RecordMac], *, now: datetime
) -> list[bool]:
    """A verdict per record, one key-service call per key version.

    A MAC that is not 4 bytes of hex, or names a key version that is unknown or retired, is
    simply wrong (False): one forged record must not stop the others. No active master at all
    is a configuration problem and raises ``Conflict`` (``key_unavailable``).
    """
    tenant_id, app = require_tenant_id(), key_application(session, now=now)
    active = _active_versions(service, tenant_id, app)
    if not active:
        raise Conflict("canteen has no POS MAC key yet: provision one", reason="key_unavailable")
    groups: dict[int, list[tuple[int, MacCheck]]] = defaultdict(list)
    for i, m in enumerate(macs):
        version = max(active) if m.key_version is None else m.key_version
        mac = _mac_bytes(m.mac)
        if version in active and mac is not None:
            groups[version].append((i, MacCheck((terminal_factor(m.device_id),), m.message, mac)))
    verdicts = [False] * len(macs)
    for version, checks in groups.items():
        with key_errors():
            got = service.verify_macs(
                module=KEY,
                tenant_id=tenant_id,
                application=app,
                key_name=RECORD_MAC_KEY,
                key_version=version,
                checks=[c for _i, c in checks],
            )
        for (i, _c), ok in zip(checks, got, strict=True):
            verdicts[i] = ok
    return verdicts


def _active_versions(service: KeyService, tenant_id: int, app: str) -> set[int]:
    keys = service.versions(tenant_id=tenant_id, application=app, key_name=RECORD_MAC_KEY)
    return {k.ref.version for k in keys if k.active}


def _mac_bytes(text: str) -> bytes | None:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw if len(raw) == MAC_LEN else None
