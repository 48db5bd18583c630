"""``/tenants``, ``/sites``, ``/org-units``, ``/settings``, ``/modules``, ``/menu``."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from onecard.platform.authz import services as authz
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.errors import PermissionDenied, ValidationFailed
from onecard.platform.registry import CORE_MENU
from onecard.platform.tenants import services as tenants
from onecard.platform.tenants.models import OrgUnit, Site, Tenant
from onecard.web.api.base import Call, Out, dump, endpoint, paged
from onecard.web.state import state


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TenantIn(_In):
    """A new tenant and its first administrator."""

    slug: str = Field(min_length=2, max_length=40, pattern=r"^[a-z][a-z0-9-]+$")
    name: str = Field(min_length=1, max_length=200)
    admin_username: str = Field(min_length=2, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]+$")
    admin_password: str = Field(min_length=1, max_length=256)


class TenantOut(Out):
    """A tenant."""

    id: int
    slug: str
    name: str
    active: bool
    created_at: datetime


class SiteIn(_In):
    """A new site."""

    code: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9._-]+$")
    name: str = Field(min_length=1, max_length=200)
    timezone: str = Field(default="Asia/Shanghai", max_length=64)


class SiteOut(Out):
    """A site."""

    id: int
    code: str
    name: str
    timezone: str


class OrgUnitIn(_In):
    """A new org unit."""

    code: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9._-]+$")
    name: str = Field(min_length=1, max_length=200)
    parent_id: int | None = None
    site_id: int | None = None


class OrgUnitOut(Out):
    """An org unit."""

    id: int
    code: str
    name: str
    parent_id: int | None
    site_id: int | None


class SettingsIn(_In):
    """Tenant settings that may change."""

    approval_threshold_fen: int | None = Field(default=None, ge=0, le=10**12)
    menu_order: list[str] | None = Field(default=None, max_length=100)
    menu_hidden: list[str] | None = Field(default=None, max_length=100)


class ModuleSwitchIn(_In):
    """Switch a module on or off."""

    enabled: bool


@endpoint("GET", "/tenants", tag="tenants", response=TenantOut, list_response=True)
def list_tenants(call: Call) -> Any:
    """All tenants (platform administrators) or your own."""
    rows = tenants.list_tenants(call.session, actor=call.actor)
    return paged([dump(TenantOut, t) for t in rows], len(rows), max(len(rows), 1), 0)


@endpoint("POST", "/tenants", tag="tenants", body=TenantIn, response=TenantOut, status=201)
def create_tenant(call: Call) -> Any:
    """Create a tenant with its first administrator (platform administrators only)."""
    if not call.actor.is_platform_admin:
        raise PermissionDenied("only platform administrators create tenants")
    body: TenantIn = call.body
    tenant = tenants.create_tenant(
        call.session, body.slug, body.name, actor=call.actor, now=call.now
    )
    # The platform administrator may provision this one operator in the tenant it just created;
    # it holds no other permission inside the tenant.
    provisioner = replace(call.actor, permissions=frozenset({"operators.manage"}))
    with tenant_scope(tenant.id):
        authz.create_operator(
            call.session,
            body.admin_username,
            body.admin_password,
            actor=provisioner,
            now=call.now,
            policy=state().policy,
            roles=["tenant_admin"],
        )
    return dump(TenantOut, tenant)


@endpoint("GET", "/sites", tag="tenants", response=SiteOut, list_response=True)
def list_sites(call: Call) -> Any:
    """Sites of the tenant."""
    rows = list(call.session.scalars(select(Site).order_by(Site.code)))
    return paged([dump(SiteOut, s) for s in rows], len(rows), max(len(rows), 1), 0)


@endpoint("POST", "/sites", tag="tenants", body=SiteIn, response=SiteOut, status=201)
def create_site(call: Call) -> Any:
    """Add a site."""
    b: SiteIn = call.body
    return dump(
        SiteOut,
        tenants.create_site(
            call.session, b.code, b.name, b.timezone, actor=call.actor, now=call.now
        ),
    )


@endpoint("GET", "/org-units", tag="tenants", response=OrgUnitOut, list_response=True)
def list_org_units(call: Call) -> Any:
    """Org units of the tenant (flat; ``parent_id`` gives the tree)."""
    rows = list(call.session.scalars(select(OrgUnit).order_by(OrgUnit.code)))
    return paged([dump(OrgUnitOut, u) for u in rows], len(rows), max(len(rows), 1), 0)


@endpoint("POST", "/org-units", tag="tenants", body=OrgUnitIn, response=OrgUnitOut, status=201)
def create_org_unit(call: Call) -> Any:
    """Add an org unit."""
    b: OrgUnitIn = call.body
    return dump(
        OrgUnitOut,
        tenants.create_org_unit(
            call.session,
            b.code,
            b.name,
            actor=call.actor,
            now=call.now,
            parent_id=b.parent_id,
            site_id=b.site_id,
        ),
    )


def _tenant(call: Call) -> Tenant:
    assert call.tenant is not None
    tenant = call.session.get(Tenant, call.tenant.id)
    assert tenant is not None
    return tenant


@endpoint("GET", "/settings", tag="tenants")
def get_settings(call: Call) -> Any:
    """Tenant settings with defaults filled in."""
    return {**tenants.DEFAULT_SETTINGS, **(_tenant(call).settings or {})}


@endpoint("PATCH", "/settings", tag="tenants", body=SettingsIn)
def patch_settings(call: Call) -> Any:
    """Change tenant settings."""
    changes = call.body.model_dump(exclude_unset=True)
    known = {i.key for i in CORE_MENU} | set(state().registry.modules)
    for key in ("menu_order", "menu_hidden"):
        bad = [k for k in changes.get(key) or [] if k not in known]
        if bad:
            raise ValidationFailed(f"unknown menu item {bad[0]}", field=key)
    tenant = tenants.update_tenant_settings(
        call.session, _tenant(call), changes, actor=call.actor, now=call.now
    )
    return {**tenants.DEFAULT_SETTINGS, **tenant.settings}


@endpoint("GET", "/modules", tag="tenants")
def list_modules(call: Call) -> Any:
    """Installed modules and whether each is on for this tenant."""
    enabled = tenants.enabled_module_keys(call.session)
    return {
        "items": [
            {"key": m.key, "name": m.name, "version": m.version, "enabled": m.key in enabled}
            for m in state().registry.modules.values()
        ]
    }


@endpoint("PUT", "/modules/{module_key}", tag="tenants", body=ModuleSwitchIn)
def switch_module(call: Call) -> Any:
    """Switch a module on or off for this tenant (its ``requires`` must be on)."""
    registry = state().registry
    key = call.path["module_key"]
    manifest = registry.modules.get(key)
    if manifest is None:
        from onecard.platform.errors import NotFound

        raise NotFound(f"module {key} is not installed")
    enabled = tenants.enabled_module_keys(call.session)
    if call.body.enabled and not manifest.requires <= enabled:
        raise ValidationFailed(f"module {key} requires {sorted(manifest.requires - enabled)[0]}")
    tenants.set_module_enabled(call.session, key, call.body.enabled, actor=call.actor, now=call.now)
    return {"key": key, "enabled": call.body.enabled}


@endpoint("GET", "/menu", tag="tenants")
def menu(call: Call) -> Any:
    """The console menu for this operator: core and enabled modules, in the tenant's order."""
    tenant = _tenant(call)
    items = state().registry.menu(
        tenant.id,
        tenants.enabled_module_keys(call.session),
        call.actor.permissions,
        order=tenants.tenant_setting(tenant, "menu_order"),
        hidden=tenants.tenant_setting(tenant, "menu_hidden"),
    )
    return {
        "items": [
            {"key": i.key, "label": i.label, "endpoint": i.endpoint, "icon": i.icon} for i in items
        ]
    }
