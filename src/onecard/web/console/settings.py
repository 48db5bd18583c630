"""Tenant settings: approval threshold, menu arrangement, module switches, sites and org units."""

from __future__ import annotations

from typing import Any

from flask import flash, request
from flask_babel import gettext as _
from sqlalchemy import select

from onecard.platform.errors import OneCardError, ValidationFailed
from onecard.platform.tenants import services as tenants
from onecard.platform.tenants.models import OrgUnit, Site, Tenant
from onecard.web.console.core import Ctx, all_menu_keys, bp, page, render, to
from onecard.web.console.forms import FormErrors, confirm_page, confirmed, form_values, parse_yuan
from onecard.web.console.i18n import yuan
from onecard.web.state import state


def _tenant(ctx: Ctx) -> Tenant:
    tenant = ctx.session.get(Tenant, ctx.tenant.id)
    assert tenant is not None
    return tenant


def _page(ctx: Ctx, errors: FormErrors, values: dict[str, Any] | None = None) -> Any:
    tenant = _tenant(ctx)
    order = tenants.tenant_setting(tenant, "menu_order") or []
    rank = {k: n for n, k in enumerate(order)}
    items = sorted(
        all_menu_keys() + _module_items(ctx),
        key=lambda i: (rank.get(i.key, len(rank)), i.order, i.key),
    )
    enabled = tenants.enabled_module_keys(ctx.session)
    return render(
        "console/settings.html",
        threshold=yuan(int(tenants.tenant_setting(tenant, "approval_threshold_fen"))),
        items=items,
        hidden=set(tenants.tenant_setting(tenant, "menu_hidden") or []),
        modules=[(m, m.key in enabled) for m in state().registry.modules.values()],
        sites=list(ctx.session.scalars(select(Site).order_by(Site.code).limit(500))),
        units=list(ctx.session.scalars(select(OrgUnit).order_by(OrgUnit.code).limit(500))),
        errors=errors,
        values=values or {},
    ), (422 if errors else 200)


def _module_items(ctx: Ctx) -> list[Any]:
    from onecard.platform.manifest import MenuItem

    return [MenuItem(m.key, m.name, "", None, order=200) for m in state().registry.modules.values()]


@bp.get("/settings", endpoint="settings")
@page("tenant.manage")
def settings_page(ctx: Ctx) -> Any:
    """The tenant's settings."""
    return _page(ctx, FormErrors())


@bp.post("/settings/threshold")
@page("tenant.manage")
def settings_threshold(ctx: Ctx) -> Any:
    """Change the amount above which refunds and adjustments need a second operator."""
    errors = FormErrors()
    fen = parse_yuan(request.form.get("threshold", ""), "threshold", errors, positive=False)
    if fen is None or fen < 0:
        errors.setdefault("threshold", _("must be 0 or more"))
        return _page(ctx, errors)
    tenants.update_tenant_settings(
        ctx.session, _tenant(ctx), {"approval_threshold_fen": fen}, actor=ctx.actor, now=ctx.now
    )
    flash(_("Approval threshold saved."), "success")
    return to("console.settings")


@bp.post("/settings/menu")
@page("tenant.manage")
def settings_menu(ctx: Ctx) -> Any:
    """Arrange the menu: a position per item and which items are hidden."""
    known = {i.key for i in all_menu_keys() + _module_items(ctx)}
    positions: list[tuple[int, str]] = []
    for key in known:
        raw = request.form.get(f"pos_{key}", "")
        positions.append((int(raw) if raw.isdigit() else 999, key))
    order = [key for _pos, key in sorted(positions)]
    hidden = sorted(k for k in request.form.getlist("hidden") if k in known)
    tenants.update_tenant_settings(
        ctx.session,
        _tenant(ctx),
        {"menu_order": order, "menu_hidden": hidden},
        actor=ctx.actor,
        now=ctx.now,
    )
    flash(_("Menu saved."), "success")
    return to("console.settings")


@bp.post("/settings/modules/<key>")
@page("tenant.modules")
def settings_module(ctx: Ctx, key: str) -> Any:
    """Switch a module on or off for this tenant."""
    registry = state().registry
    manifest = registry.modules.get(key)
    if manifest is None:
        raise ValidationFailed(f"module {key} is not installed")
    enable = request.form.get("enabled") == "yes"
    if not enable and not confirmed():
        return confirm_page(
            _("Switch off %(name)s", name=manifest.name),
            _("Its pages and device rules stop for this tenant until it is switched on again."),
        )
    enabled = tenants.enabled_module_keys(ctx.session)
    if enable and not manifest.requires <= enabled:
        raise ValidationFailed(f"module {key} requires {sorted(manifest.requires - enabled)[0]}")
    tenants.set_module_enabled(ctx.session, key, enable, actor=ctx.actor, now=ctx.now)
    flash(_("Module switched."), "success")
    return to("console.settings")


@bp.post("/settings/sites")
@page("tenant.manage")
def settings_site(ctx: Ctx) -> Any:
    """Add a site."""
    values = form_values("code", "name", "timezone")
    errors = FormErrors()
    try:
        tenants.create_site(
            ctx.session,
            values["code"],
            values["name"],
            values["timezone"] or "Asia/Shanghai",
            actor=ctx.actor,
            now=ctx.now,
        )
    except OneCardError as exc:
        errors.add_domain(exc, f"site_{exc.details.get('field') or ''}")
        return _page(ctx, errors, {"site": values})
    flash(_("Site added."), "success")
    return to("console.settings")


@bp.post("/settings/org-units")
@page("tenant.manage")
def settings_org_unit(ctx: Ctx) -> Any:
    """Add an org unit."""
    values = form_values("code", "name", "parent_id", "site_id")
    errors = FormErrors()
    try:
        tenants.create_org_unit(
            ctx.session,
            values["code"],
            values["name"],
            actor=ctx.actor,
            now=ctx.now,
            parent_id=int(values["parent_id"]) if values["parent_id"].isdigit() else None,
            site_id=int(values["site_id"]) if values["site_id"].isdigit() else None,
        )
    except OneCardError as exc:
        errors.add_domain(exc, f"unit_{exc.details.get('field') or ''}")
        return _page(ctx, errors, {"unit": values})
    flash(_("Org unit added."), "success")
    return to("console.settings")
