"""Creating tenants, sites and org units; switching modules per tenant."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.platform.actors import Actor
from onecard.platform.audit.record import record
from onecard.platform.authz.roles import create_default_roles
from onecard.platform.db.tenancy import get_scoped, tenant_scope, unscoped
from onecard.platform.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from onecard.platform.ledger.accounts import open_tenant_accounts
from onecard.platform.tenants.models import OrgUnit, Site, Tenant, TenantModule

SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{1,39}$")
PLATFORM_SLUG = "_platform"
DEFAULT_SETTINGS: dict[str, Any] = {
    "approval_threshold_fen": 50000,  # refunds/adjustments above this need a second operator
    "currency": "CNY",
    "menu_order": [],
    "menu_hidden": [],
}


def get_tenant_by_slug(session: Session, slug: str) -> Tenant:
    """The tenant named ``slug``; :class:`NotFound` otherwise (also for inactive tenants)."""
    tenant = session.scalar(select(Tenant).where(Tenant.slug == slug, Tenant.active.is_(True)))
    if tenant is None:
        raise NotFound(f"tenant {slug} not found")
    return tenant


def ensure_platform_tenant(session: Session, *, now: datetime) -> Tenant:
    """The pseudo-tenant that holds platform administrators and platform-level audit."""
    found = session.scalar(select(Tenant).where(Tenant.slug == PLATFORM_SLUG))
    if found is not None:
        return found
    tenant = Tenant(
        slug=PLATFORM_SLUG, name="Platform", is_platform=True, settings={}, created_at=now
    )
    session.add(tenant)
    session.flush()
    return tenant


def create_tenant(session: Session, slug: str, name: str, *, actor: Actor, now: datetime) -> Tenant:
    """Create a tenant with its own accounts and default roles; platform administrators only."""
    if not (actor.is_platform_admin or actor.type == "system"):
        raise PermissionDenied("only platform administrators create tenants")
    if not SLUG_RE.match(slug):
        raise ValidationFailed(
            "slug must be 2-40 of a-z, 0-9 and '-', starting with a letter", field="slug"
        )
    if session.scalar(select(Tenant.id).where(Tenant.slug == slug)) is not None:
        raise Conflict(f"tenant {slug} already exists", field="slug")
    tenant = Tenant(slug=slug, name=name, settings=dict(DEFAULT_SETTINGS), created_at=now)
    session.add(tenant)
    session.flush()
    with tenant_scope(tenant.id):
        open_tenant_accounts(session, now=now)
        create_default_roles(session, now=now)
        record(
            session,
            "tenant.created",
            actor=actor,
            now=now,
            object_type="tenant",
            object_id=tenant.id,
            data={"slug": slug, "name": name},
        )
    return tenant


def list_tenants(session: Session, *, actor: Actor) -> list[Tenant]:
    """All tenants (platform administrators) or the actor's own."""
    if actor.is_platform_admin:
        with unscoped(reason="platform administrator lists tenants"):
            return list(session.scalars(select(Tenant).where(Tenant.is_platform.is_(False))))
    return list(session.scalars(select(Tenant).where(Tenant.id == actor.tenant_id)))


def validate_timezone(name: str) -> str:
    """Return ``name`` if it is a known IANA zone, else raise :class:`ValidationFailed`."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(f"{name!r} is not an IANA time zone", field="timezone") from None
    return name


def create_site(
    session: Session, code: str, name: str, timezone: str, *, actor: Actor, now: datetime
) -> Site:
    """Add a site (campus, branch) to the tenant in scope."""
    actor.ensure("tenant.manage")
    validate_timezone(timezone)
    if session.scalar(select(Site.id).where(Site.code == code)) is not None:
        raise Conflict(f"site {code} already exists", field="code")
    site = Site(code=code, name=name, timezone=timezone)
    session.add(site)
    session.flush()
    record(
        session,
        "site.created",
        actor=actor,
        now=now,
        object_type="site",
        object_id=site.id,
        data={"code": code, "timezone": timezone},
    )
    return site


def create_org_unit(
    session: Session,
    code: str,
    name: str,
    *,
    actor: Actor,
    now: datetime,
    parent_id: int | None = None,
    site_id: int | None = None,
) -> OrgUnit:
    """Add an org unit under ``parent_id`` (or at the root) in the tenant in scope."""
    actor.ensure("tenant.manage")
    if parent_id is not None and get_scoped(session, OrgUnit, parent_id) is None:
        raise NotFound(f"org unit {parent_id} not found", field="parent_id")
    if site_id is not None and get_scoped(session, Site, site_id) is None:
        raise NotFound(f"site {site_id} not found", field="site_id")
    if session.scalar(select(OrgUnit.id).where(OrgUnit.code == code)) is not None:
        raise Conflict(f"org unit {code} already exists", field="code")
    unit = OrgUnit(code=code, name=name, parent_id=parent_id, site_id=site_id)
    session.add(unit)
    session.flush()
    record(
        session,
        "org_unit.created",
        actor=actor,
        now=now,
        object_type="org_unit",
        object_id=unit.id,
        data={"code": code, "parent_id": parent_id},
    )
    return unit


def org_unit_subtrees(session: Session, roots: Iterable[int]) -> frozenset[int]:
    """The ids of ``roots`` and every org unit below them (for data scopes)."""
    children: dict[int | None, list[int]] = defaultdict(list)
    for uid, parent in session.execute(select(OrgUnit.id, OrgUnit.parent_id)):
        children[parent].append(uid)
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        uid = stack.pop()
        if uid not in seen:
            seen.add(uid)
            stack.extend(children[uid])
    return frozenset(seen)


def org_units_of_sites(session: Session, site_ids: Iterable[int]) -> frozenset[int]:
    """The org units tied to any of ``site_ids``, with their subtrees."""
    roots = session.scalars(select(OrgUnit.id).where(OrgUnit.site_id.in_(list(site_ids))))
    return org_unit_subtrees(session, roots)


def set_module_enabled(
    session: Session, module_key: str, enabled: bool, *, actor: Actor, now: datetime
) -> TenantModule:
    """Switch a module on or off for the tenant in scope (the registry validates the key)."""
    actor.ensure("tenant.modules")
    row = session.scalar(select(TenantModule).where(TenantModule.module_key == module_key))
    if row is None:
        row = TenantModule(module_key=module_key, enabled=enabled, settings={}, changed_at=now)
        session.add(row)
    else:
        row.enabled, row.changed_at = enabled, now
    session.flush()
    record(
        session,
        "module.enabled" if enabled else "module.disabled",
        actor=actor,
        now=now,
        object_type="module",
        object_id=module_key,
    )
    return row


def enabled_module_keys(session: Session) -> frozenset[str]:
    """Keys of the modules switched on for the tenant in scope."""
    rows = session.scalars(select(TenantModule.module_key).where(TenantModule.enabled.is_(True)))
    return frozenset(rows)


def update_tenant_settings(
    session: Session, tenant: Tenant, changes: dict[str, Any], *, actor: Actor, now: datetime
) -> Tenant:
    """Change known tenant settings; unknown keys are refused."""
    actor.ensure("tenant.manage")
    unknown = set(changes) - set(DEFAULT_SETTINGS)
    if unknown:
        raise ValidationFailed(f"unknown setting {sorted(unknown)[0]}", field=sorted(unknown)[0])
    tenant.settings = {**DEFAULT_SETTINGS, **(tenant.settings or {}), **changes}
    record(
        session,
        "tenant.settings_changed",
        actor=actor,
        now=now,
        object_type="tenant",
        object_id=tenant.id,
        data=changes,
    )
    return tenant


def tenant_setting(tenant: Tenant, key: str) -> Any:
    """A tenant setting with its default."""
    return (tenant.settings or {}).get(key, DEFAULT_SETTINGS[key])
