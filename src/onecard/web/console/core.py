"""The console blueprint, who is logged in, and the ``@page`` unit of work.

The Flask session (a signed cookie) holds the tenants this browser has logged in to: a list of
``{"t": tenant_id, "o": operator_id, "at": login time}`` and which one is active, plus an
optional site that narrows the data scope. Each request re-reads the operator, so a
deactivated operator or tenant is out at once; a login older than ``web.token_ttl_minutes``
lapses. No bearer token is kept: console sessions and API tokens are separate credentials.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from onecard.platform.actors import Actor
from onecard.platform.audit.record import RequestInfo, request_context
from onecard.platform.authz.models import Operator
from onecard.platform.authz.services import actor_for
from onecard.platform.clock import as_utc, utcnow
from onecard.platform.db.tenancy import get_scoped, tenant_scope
from onecard.platform.errors import OneCardError, PermissionDenied
from onecard.platform.manifest import MenuItem
from onecard.platform.tenants import services as tenants
from onecard.platform.tenants.models import Site, Tenant
from onecard.web.console.messages import localise
from onecard.web.console.security import add_headers, check_csrf, csrf_token
from onecard.web.state import state

log = logging.getLogger(__name__)
bp = Blueprint("console", __name__, url_prefix="/console")


@dataclass
class Ctx:
    """What a console view works with (passed explicitly, like the API's ``Call``)."""

    session: Session
    actor: Actor
    tenant: Tenant
    operator: Operator
    now: datetime
    site: Site | None = None


def logins() -> list[dict[str, Any]]:
    """The tenants this browser session is logged in to."""
    return list(session.get("logins") or [])


def add_login(tenant_id: int, operator_id: int, now: datetime) -> None:
    """Remember a successful login and make it the active one."""
    kept = [entry for entry in logins() if entry["t"] != tenant_id]
    kept.append({"t": tenant_id, "o": operator_id, "at": now.isoformat()})
    session["logins"], session["active"], session["site"] = kept, tenant_id, None


def drop_login(tenant_id: int) -> None:
    """Forget one tenant's login (log out of it); activate another if any remain."""
    kept = [entry for entry in logins() if entry["t"] != tenant_id]
    session["logins"] = kept
    session["active"] = kept[-1]["t"] if kept else None
    session["site"] = None


def _active_login(now: datetime) -> dict[str, Any] | None:
    ttl = timedelta(minutes=state().settings.web.token_ttl_minutes)
    fresh = [e for e in logins() if as_utc(datetime.fromisoformat(e["at"])) + ttl > now]
    if len(fresh) != len(logins()):
        session["logins"] = fresh
    active = session.get("active")
    return next((e for e in fresh if e["t"] == active), fresh[-1] if fresh else None)


def safe_next(target: str | None) -> str:
    """A same-site console path to go back to after login (anything else: the home page)."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path.startswith("/console/"):
            return target
    return url_for("console.home")


class LoginRequired(Exception):
    """No valid console login for this request."""


def _load(s: Session, entry: dict[str, Any]) -> tuple[Tenant, Operator, Actor, Site | None]:
    tenant = s.get(Tenant, entry["t"])
    if tenant is None or not tenant.active:
        drop_login(entry["t"])
        raise LoginRequired
    with tenant_scope(tenant.id):
        operator = get_scoped(s, Operator, entry["o"])
        if operator is None or not operator.active:
            drop_login(entry["t"])
            raise LoginRequired
        actor = actor_for(s, operator)
        site = _chosen_site(s, operator)
        if site is not None:
            actor = narrowed(s, actor, site)
    return tenant, operator, actor, site


def sites_for(s: Session, operator: Operator) -> list[Site]:
    """The sites an operator may switch between (their scope's sites, else all the tenant's)."""
    allowed = (operator.scope or {}).get("sites") or []
    if (operator.scope or {}).get("org_units") and not allowed:
        return []  # scoped by org unit only: no site to choose
    stmt = select(Site).order_by(Site.code)
    if allowed:
        stmt = stmt.where(Site.id.in_(allowed))
    return list(s.scalars(stmt.limit(200)))


def _chosen_site(s: Session, operator: Operator) -> Site | None:
    site_id = session.get("site")
    if not site_id:
        return None
    return next((site for site in sites_for(s, operator) if site.id == site_id), None)


def narrowed(s: Session, actor: Actor, site: Site) -> Actor:
    """``actor`` limited to the org units of ``site`` (within their own scope)."""
    units = set(tenants.org_units_of_sites(s, [site.id]))
    if actor.org_unit_scope is not None:
        units &= actor.org_unit_scope
    return replace(actor, org_unit_scope=frozenset(units))


def page(
    permission: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a console view: login, CSRF, permission, tenant scope and unit of work.

    The view gets a :class:`Ctx` first. A POST commits when the view returns; any error rolls
    back. ``OneCardError`` subclasses that escape become an error page with their status.
    """

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(**kwargs: Any) -> Any:
            now = utcnow()
            entry = _active_login(now)
            if entry is None:
                return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
            st = state()
            info = RequestInfo(ip=request.remote_addr, request_id=g.get("request_id"))
            with st.sessions() as s, request_context(info):
                try:
                    tenant, operator, actor, site = _load(s, entry)
                except LoginRequired:
                    return redirect(url_for("console.login"))
                g.actor = actor
                with tenant_scope(tenant.id):
                    ctx = Ctx(s, actor, tenant, operator, now, site)
                    g.ctx = ctx
                    if permission:
                        actor.ensure(permission)
                    result = view(ctx, **kwargs)
                    if request.method == "POST":
                        s.commit()
                    return result

        return wrapper

    return decorate


def render(template: str, **values: Any) -> str:
    """Render a console template with the menu, switchers and operator in the context."""
    return render_template(template, **values)


def menu_items(ctx: Ctx) -> list[MenuItem]:
    """The operator's menu: registry items plus console pages, in the tenant's order."""
    registry = state().registry
    enabled = tenants.enabled_module_keys(ctx.session)
    order = tenants.tenant_setting(ctx.tenant, "menu_order") or []
    hidden = set(tenants.tenant_setting(ctx.tenant, "menu_hidden") or [])
    items = registry.menu(ctx.tenant.id, enabled, ctx.actor.permissions)
    rank = {key: n for n, key in enumerate(order)}
    items = [i for i in items if i.key not in hidden and i.endpoint in current_app.view_functions]
    return sorted(items, key=lambda i: (rank.get(i.key, len(rank)), i.order, i.key))


def all_menu_keys() -> list[MenuItem]:
    """Every core menu item a tenant may arrange."""
    from onecard.platform.registry import CORE_MENU

    return list(CORE_MENU)


@bp.app_context_processor
def _template_context() -> dict[str, Any]:
    ctx: Ctx | None = g.get("ctx")
    values: dict[str, Any] = {"csrf_token": csrf_token, "ctx": ctx}
    # Set by `page` only: the console's pages and those of modules' console blueprints.
    if ctx is not None:
        values["menu"] = menu_items(ctx)
        values["sites"] = sites_for(ctx.session, ctx.operator)
        values["tenant_logins"] = _tenant_choices(ctx.session)
    return values


def _tenant_choices(s: Session) -> list[tuple[int, str]]:
    ids = [e["t"] for e in logins()]
    rows = s.execute(select(Tenant.id, Tenant.name).where(Tenant.id.in_(ids))) if ids else []
    return [(tid, name) for tid, name in rows]


@bp.before_request
def _csrf() -> None:
    check_csrf()


@bp.after_request
def _headers(response: Response) -> Response:
    return add_headers(response)


@bp.errorhandler(OneCardError)
def domain_error_page(exc: OneCardError) -> tuple[str, int]:
    """A domain refusal as the console's error page (403 for a permission, else its status);
    module blueprints register it too."""
    g.pop("ctx", None)  # the view's session and tenant scope are gone: no menu on this page
    status = 403 if isinstance(exc, PermissionDenied) else exc.status
    title = _("Not allowed") if status == 403 else _("Something is wrong")
    return render_template("console/error.html", title=title, message=localise(exc.message)), status


@bp.errorhandler(HTTPException)
def http_error_page(exc: HTTPException) -> tuple[str, int]:
    """An HTTP error (400 shows its description, others their name) as the console's page."""
    g.pop("ctx", None)
    status = exc.code or 500
    title = _("Bad request") if status == 400 else (exc.name or _("Something is wrong"))
    message = (exc.description or "") if status == 400 else (exc.name or "")
    return render_template("console/error.html", title=title, message=message), status


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> tuple[str, int]:
    log.exception("console error", extra={"request_id": g.get("request_id")})
    g.pop("ctx", None)
    message = _(
        "The server failed to handle the request; quote request id %(id)s.",
        id=g.get("request_id", ""),
    )
    return render_template(
        "console/error.html", title=_("Something is wrong"), message=message
    ), 500


@bp.get("/")
@page()
def home(ctx: Ctx) -> Any:
    """The start page: the first menu entry the operator may use."""
    items = menu_items(ctx)
    if items:
        return redirect(url_for(items[0].endpoint))
    return render("console/home.html")


def to(endpoint: str, **values: Any) -> Response:
    """Redirect after a successful POST."""
    return redirect(url_for(endpoint, **values), 303)
