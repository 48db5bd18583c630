"""The platform side of the key service: opening the HSM from settings, the tenant's card
layout plan (persisted), provisioning the purse's master keys, and the audit adapter.

`Keyring` holds the process-wide HSM; `Keyring.service(session, actor=, now=)` gives a
`KeyService` whose audit events are platform audit events in the caller's session (so they
commit or roll back with the change they describe) and whose plans come from the
``card_layout_plans`` table. No key bytes pass through here: only refs, KCVs and verdicts.

Default plan [D]: one campus purse ADF (our AID, one diversification level) owned by the card
centre — the platform's own module key ``card_centre``, which issues cards, authorises loads and
runs clearing — with grants of the purchase and TAC keys (DPK, DTK) to ``canteen`` and
``transit``, so their terminals' PSAM images and TAC checks work while the load key (DLK), the
maintenance key and the transport key stay with the card centre. Compound records in SFI 0x1A
belong to ``transit`` (01), ``canteen`` (02) and ``access`` (03). A tenant replaces the plan
with `save_plan`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.config import ConfigError, KeysSettings
from onecard.device_agents.protocol.cardfiles import CAMPUS_AID
from onecard.keys.algorithms import Algorithm
from onecard.keys.errors import (
    ApplicationNotOwned,
    InvalidInput,
    KeyNotFound,
    KeyServiceError,
    MacInvalid,
    OperationNotPermitted,
)
from onecard.keys.hsm import Hsm
from onecard.keys.keystore import load_kek
from onecard.keys.layout import AppKind, CardApplication, CardLayoutPlan, Grant
from onecard.keys.profiles import Profile
from onecard.keys.service import AuditFn, KeyService
from onecard.keys.softhsm import SoftHsm
from onecard.platform.actors import Actor
from onecard.platform.audit.record import record
from onecard.platform.cards.keymodels import CardLayoutPlanRow
from onecard.platform.db.tenancy import current_tenant_id, require_tenant_id
from onecard.platform.errors import Conflict, PermissionDenied, ValidationFailed

log = logging.getLogger(__name__)

CARD_CENTRE: Final = "card_centre"
PURSE: Final = "purse"
PURSE_KEYS: Final = ("DLK", "DPK", "DTK", "DAMK")
TRANSPORT: Final = "TK"
DEV_KEK_NAME: Final = "kek.key"

_hsms: dict[Path, SoftHsm] = {}
_hsms_lock = threading.Lock()


# ------------------------------------------------------------------------------ the HSM
def kek_from_settings(settings: KeysSettings) -> bytes:
    """The store's KEK from ``kek_file`` or the ``kek_env`` variable.

    In development mode, when neither is set, a random KEK is created beside the store
    (``var/kek.key``, mode 0600) on first use, with a warning; otherwise `ConfigError`.
    """
    if settings.kek_file:
        return load_kek(path=settings.kek_file)
    if settings.kek_env and os.environ.get(settings.kek_env):
        return load_kek(env=settings.kek_env)
    if not settings.development:
        raise ConfigError(f"keys: set kek_file or the environment variable {settings.kek_env}")
    path = Path(settings.store).parent / DEV_KEK_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(os.urandom(32).hex() + "\n")
        log.warning("development key-encryption key created at %s (not for production)", path)
    return load_kek(path=path)


def open_hsm(settings: KeysSettings) -> SoftHsm:
    """The process's software HSM for ``settings.store`` (one instance per store file)."""
    if settings.backend != "softhsm":
        raise ConfigError(f"keys.backend: unknown backend {settings.backend!r}")
    path = Path(settings.store).resolve()
    with _hsms_lock:
        hsm = _hsms.get(path)
        if hsm is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            hsm = SoftHsm(path, kek_from_settings(settings), create=True)
            _hsms[path] = hsm
        return hsm


@dataclass(frozen=True)
class Keyring:
    """The platform's handle on the HSM; builds per-unit-of-work `KeyService` objects."""

    hsm: Hsm

    @classmethod
    def from_settings(cls, settings: KeysSettings) -> Keyring:
        """A keyring over the software HSM that ``settings`` name."""
        return cls(open_hsm(settings))

    def service(self, session: Session, *, actor: Actor, now: datetime) -> KeyService:
        """A `KeyService` auditing into ``session`` as ``actor`` and reading stored plans."""
        return KeyService(
            self.hsm, plan_lookup(session, now=now), audit_adapter(session, actor=actor, now=now)
        )


# ------------------------------------------------------------------------------ audit
_denials: ContextVar[tuple[int, str, Actor, dict[str, Any]] | None] = ContextVar(
    "onecard_key_denial", default=None
)


def audit_adapter(session: Session, *, actor: Actor, now: datetime) -> AuditFn:
    """`KeyService` audit callback writing ``keys.*`` platform audit events into ``session``."""

    def _audit(event_type: str, tenant_id: int, data: dict[str, Any]) -> None:
        if tenant_id != require_tenant_id():
            raise PermissionDenied("key operation for another tenant", tenant_id=tenant_id)
        if event_type == "keys.access_denied":
            _denials.set((tenant_id, event_type, actor, dict(data)))
        what = data.get("application") or data.get("sector")
        record(
            session,
            event_type,
            actor=actor,
            now=now,
            object_type="card_application",
            object_id=what,
            data=data,
        )

    return _audit


@contextmanager
def key_errors() -> Iterator[None]:
    """Map key-service refusals to platform errors (problem documents on the web)."""
    try:
        yield
    except MacInvalid as err:
        raise ValidationFailed(str(err), reason="mac_invalid") from None
    except ApplicationNotOwned as err:
        refusal = PermissionDenied(str(err))
        denial = _denials.get()
        if denial is not None:  # the refusal is audited even when the request rolls back
            refusal.lasting_audit.append(denial)
            _denials.set(None)
        raise refusal from None
    except (KeyNotFound, OperationNotPermitted) as err:
        raise Conflict(str(err), reason="key_unavailable") from None
    except (InvalidInput, KeyServiceError) as err:
        raise ValidationFailed(str(err)) from None


# ------------------------------------------------------------------------------ plans
def default_plan(tenant_id: int, algorithm: Algorithm = Algorithm.SM4) -> CardLayoutPlan:
    """The plan a tenant starts with (see the module docstring)."""
    purse = CardApplication(
        app_id=PURSE,
        owner=CARD_CENTRE,
        kind=AppKind.CPU_ADF,
        algorithm=algorithm,
        levels=1,
        profile=Profile.CAMPUS,
        aid=CAMPUS_AID.hex().upper(),
        grants=(Grant("canteen", ("DPK", "DTK")), Grant("transit", ("DPK", "DTK"))),
    )
    records = tuple(
        CardApplication(f"{owner}-record", owner, AppKind.CPU_RECORD, algorithm, 1, record_id=n)
        for n, owner in enumerate(("transit", "canteen", "access"), start=1)
    )
    return CardLayoutPlan(tenant_id, (purse, *records))


def _plan_row(session: Session) -> CardLayoutPlanRow | None:
    return session.scalar(select(CardLayoutPlanRow))


def load_plan(session: Session, *, now: datetime) -> CardLayoutPlan:
    """The tenant's plan; the default plan is stored on first use (version 1)."""
    tenant_id = require_tenant_id()
    row = _plan_row(session)
    if row is None:
        plan = default_plan(tenant_id)
        session.add(CardLayoutPlanRow(plan=plan.to_dict(), version=1, updated_at=now))
        session.flush()
        return plan
    return CardLayoutPlan.from_dict(row.plan)


def save_plan(
    session: Session, plan: CardLayoutPlan, *, actor: Actor, now: datetime
) -> CardLayoutPlanRow:
    """Store ``plan`` as the tenant's new plan version (audited ``keys.layout_saved``)."""
    actor.ensure("tenant.manage")
    if plan.tenant_id != require_tenant_id():
        raise ValidationFailed("the plan names another tenant", tenant_id=plan.tenant_id)
    row = _plan_row(session)
    if row is None:
        row = CardLayoutPlanRow(plan=plan.to_dict(), version=1, updated_at=now)
        session.add(row)
    else:
        row.plan, row.version, row.updated_at = plan.to_dict(), row.version + 1, now
    session.flush()
    apps = [a.app_id for a in plan.applications]
    record(session, "keys.layout_saved", actor=actor, now=now, object_type="card_layout_plan",
           object_id=row.id, data={"version": row.version, "applications": apps})  # fmt: skip
    return row


def plan_lookup(session: Session, *, now: datetime) -> Callable[[int], CardLayoutPlan | None]:
    """`KeyService` plan callback: only the tenant in scope has a plan (others are refused)."""

    def _lookup(tenant_id: int) -> CardLayoutPlan | None:
        if tenant_id != current_tenant_id():
            return None
        return load_plan(session, now=now)

    return _lookup


# ------------------------------------------------------------------------------ provisioning
def ensure_purse_keys(service: KeyService, tenant_id: int, *, version: int = 1) -> list[str]:
    """Generate the purse's master keys and transport key that do not exist yet.

    Card masters are generated non-exportable; the transport key is exportable so that its
    custodians can carry components to personalisation devices. Returns the names generated.
    """
    made = []
    for name in (*PURSE_KEYS, TRANSPORT):
        if service.versions(tenant_id=tenant_id, application=PURSE, key_name=name):
            continue
        service.generate_master(
            module=CARD_CENTRE,
            tenant_id=tenant_id,
            application=PURSE,
            key_name=name,
            version=version,
            exportable=name == TRANSPORT,
        )
        made.append(name)
    return made
