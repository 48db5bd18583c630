"""Operators and roles of the tenant (``operators.manage``)."""

from __future__ import annotations

from typing import Any

from flask import flash, request
from flask_babel import gettext as _
from sqlalchemy import func, select

from onecard.platform.audit.record import record
from onecard.platform.authz import services as authz
from onecard.platform.authz.models import Operator, OperatorRole, Role
from onecard.platform.authz.permissions import all_permissions
from onecard.platform.errors import OneCardError
from onecard.platform.tenants.models import OrgUnit, Site
from onecard.web.console.core import Ctx, bp, page, render, to
from onecard.web.console.forms import (
    FormErrors,
    Pager,
    confirm_page,
    confirmed,
    form_values,
    paging,
)
from onecard.web.state import state


def _roles(ctx: Ctx) -> list[Role]:
    return list(ctx.session.scalars(select(Role).order_by(Role.name).limit(500)))


def _choices(ctx: Ctx) -> dict[str, Any]:
    return {
        "roles": _roles(ctx),
        "sites": list(ctx.session.scalars(select(Site).order_by(Site.code).limit(500))),
        "units": list(ctx.session.scalars(select(OrgUnit).order_by(OrgUnit.code).limit(500))),
    }


def _ids(name: str) -> list[int]:
    return sorted({int(v) for v in request.form.getlist(name) if v.isdigit()})


@bp.get("/operators", endpoint="operators")
@page("operators.manage")
def operators_list(ctx: Ctx) -> Any:
    """Operators of the tenant with their roles (server-side pages)."""
    limit, offset = paging()
    q = request.args.get("q", "").strip()[:64]
    stmt = select(Operator)
    if q:
        stmt = stmt.where(Operator.username.startswith(q, autoescape=True))
    total = ctx.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = list(ctx.session.scalars(stmt.order_by(Operator.username).limit(limit).offset(offset)))
    roles: dict[int, list[str]] = {o.id: [] for o in rows}
    if rows:
        for op_id, name in ctx.session.execute(
            select(OperatorRole.operator_id, Role.name)
            .join(Role, Role.id == OperatorRole.role_id)
            .where(OperatorRole.operator_id.in_(list(roles)))
        ):
            roles[op_id].append(name)
    return render(
        "console/admin/operators.html",
        operators=rows,
        roles=roles,
        pager=Pager(total, limit, offset),
        q=q,
        all_roles=_roles(ctx),
    )


@bp.route("/operators/new", methods=["GET", "POST"])
@page("operators.manage")
def operator_new(ctx: Ctx) -> Any:
    """Create an operator with roles and a data scope."""
    errors = FormErrors()
    values: dict[str, Any] = {"roles": [], "sites": [], "org_units": []}
    if request.method == "POST":
        values = {
            **form_values("username", "display_name", "password"),
            "roles": request.form.getlist("roles"),
            "sites": _ids("sites"),
            "org_units": _ids("org_units"),
        }
        try:
            op = authz.create_operator(
                ctx.session,
                values["username"],
                values["password"],
                actor=ctx.actor,
                now=ctx.now,
                policy=state().policy,
                display_name=values["display_name"],
                roles=values["roles"],
                scope={"sites": values["sites"], "org_units": values["org_units"]},
            )
        except OneCardError as exc:
            errors.add_domain(exc)
        else:
            ctx.session.commit()
            flash(_("Operator %(name)s created.", name=op.username), "success")
            return to("console.operators")
    values.pop("password", None)
    return render(
        "console/admin/operator_form.html", values=values, errors=errors, op=None, **_choices(ctx)
    ), (422 if errors else 200)


@bp.route("/operators/<int:operator_id>", methods=["GET", "POST"])
@page("operators.manage")
def operator_edit(ctx: Ctx, operator_id: int) -> Any:
    """Change an operator's name, roles, scope, or whether they may log in."""
    op = authz.get_operator(ctx.session, operator_id)
    current = set(
        ctx.session.scalars(
            select(Role.name)
            .join(OperatorRole, OperatorRole.role_id == Role.id)
            .where(OperatorRole.operator_id == op.id)
        )
    )
    values: dict[str, Any] = {
        "display_name": op.display_name,
        "roles": sorted(current),
        "sites": (op.scope or {}).get("sites", []),
        "org_units": (op.scope or {}).get("org_units", []),
        "active": op.active,
    }
    errors = FormErrors()
    if request.method == "POST":
        values = {
            "display_name": request.form.get("display_name", "").strip()[:100],
            "roles": request.form.getlist("roles"),
            "sites": _ids("sites"),
            "org_units": _ids("org_units"),
            "active": request.form.get("active") == "yes",
        }
        if op.active and not values["active"] and not confirmed():
            return confirm_page(
                _("Deactivate %(name)s", name=op.username),
                _("The operator can no longer log in to the console or the API."),
            )
        try:
            _apply(ctx, op, values, current)
        except OneCardError as exc:
            errors.add_domain(exc)
        else:
            ctx.session.commit()
            flash(_("Changes saved."), "success")
            return to("console.operators")
    return render(
        "console/admin/operator_form.html", values=values, errors=errors, op=op, **_choices(ctx)
    ), (422 if errors else 200)


def _apply(ctx: Ctx, op: Operator, values: dict[str, Any], current: set[str]) -> None:
    if set(values["roles"]) != current:
        authz.set_roles(ctx.session, op, values["roles"], actor=ctx.actor, now=ctx.now)
    scope = {k: values[k] for k in ("sites", "org_units") if values[k]}
    changes = {
        k: v
        for k, v in (
            ("display_name", values["display_name"]),
            ("active", values["active"]),
            ("scope", scope),
        )
        if getattr(op, k) != v
    }
    if op.id == ctx.operator.id and changes.get("active") is False:
        from onecard.platform.errors import ValidationFailed

        raise ValidationFailed("you cannot deactivate yourself", field="active")
    for key, value in changes.items():
        setattr(op, key, value)
    if changes:
        record(
            ctx.session,
            "operator.updated",
            actor=ctx.actor,
            now=ctx.now,
            object_type="operator",
            object_id=op.id,
            data=changes,
        )


@bp.route("/roles", methods=["GET", "POST"])
@page("operators.manage")
def roles(ctx: Ctx) -> Any:
    """Roles and their permissions; create a role."""
    errors = FormErrors()
    values: dict[str, Any] = {"permissions": []}
    if request.method == "POST":
        values = {
            **form_values("name", "description"),
            "permissions": request.form.getlist("permissions"),
        }
        try:
            authz.create_role(
                ctx.session,
                values["name"],
                values["permissions"],
                actor=ctx.actor,
                now=ctx.now,
                description=values["description"],
            )
        except OneCardError as exc:
            errors.add_domain(exc)
        else:
            ctx.session.commit()
            flash(_("Role %(name)s created.", name=values["name"]), "success")
            return to("console.roles")
    perms = sorted(all_permissions().values(), key=lambda p: p.name)
    return render(
        "console/admin/roles.html",
        roles=_roles(ctx),
        permissions=perms,
        values=values,
        errors=errors,
    ), (422 if errors else 200)
