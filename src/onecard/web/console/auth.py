"""Console login (password, optional TOTP), logout, tenant/site switchers, language, profile."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, request, session, url_for
from flask_babel import gettext as _

from onecard.platform.authz import services as authz
from onecard.platform.clock import utcnow
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.errors import NotFound
from onecard.platform.tenants.models import Tenant
from onecard.platform.tenants.services import get_tenant_by_slug
from onecard.web.console.core import (
    Ctx,
    add_login,
    bp,
    drop_login,
    logins,
    page,
    render,
    safe_next,
    sites_for,
)
from onecard.web.console.forms import FormErrors, confirm_page, confirmed, form_values
from onecard.web.console.i18n import LANGUAGES
from onecard.web.state import state


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """The login form; a second factor field appears when the operator has TOTP."""
    errors = FormErrors()
    values = form_values("tenant", "username", "password", "totp")
    values["tenant"] = values["tenant"] or request.args.get("tenant", "")
    need_totp = False
    if request.method == "POST":
        result = _try_login(values, errors)
        if result is True:
            return redirect(safe_next(request.form.get("next")), 303)
        need_totp = result == "totp"
    values.pop("password", None)
    return render(
        "console/login.html",
        values=values,
        errors=errors,
        need_totp=need_totp or bool(values.get("totp")),
        next=request.values.get("next", ""),
    ), (401 if errors else 200)


def _try_login(values: dict[str, str], errors: FormErrors) -> bool | str:
    st = state()
    ip = request.remote_addr or "?"
    if st.throttle.blocked(ip):
        errors[""] = _("Too many failed logins from this address; wait a few minutes.")
        return False
    now = utcnow()
    with st.sessions() as s:
        tenant = _tenant(s, values["tenant"])
        result = authz.login(
            s,
            tenant,
            values["username"],
            values["password"],
            totp=values["totp"] or None,
            now=now,
            policy=st.policy,
            box=st.box,
        )
        if result.ok and result.token and tenant is not None:
            with tenant_scope(tenant.id):  # the console keeps no bearer token
                authz.revoke_token(s, result.token, now=now)
        s.commit()
    if not result.ok:
        if result.reason == "second factor required":
            errors["totp"] = _("Enter the 6-digit code from your authenticator app.")
            return "totp"
        st.throttle.failed(ip)
        errors[""] = _login_message(result.reason)
        return "totp" if result.reason == "invalid second factor" else False
    assert tenant is not None
    assert result.operator_id is not None
    add_login(tenant.id, result.operator_id, now)
    return True


def _tenant(s: Any, slug: str) -> Tenant | None:
    try:
        return get_tenant_by_slug(s, slug) if slug else None
    except NotFound:
        return None


def _login_message(reason: str) -> str:
    return {
        "invalid credentials": _("Tenant, username or password is wrong."),
        "account locked; try again later": _("This operator is locked; try again later."),
        "invalid second factor": _("The authenticator code is wrong or was already used."),
    }.get(reason, reason)


@bp.post("/logout")
def logout() -> Any:
    """Log out of the active tenant (the other tenants' logins stay)."""
    active = session.get("active")
    if active is not None:
        drop_login(active)
    if not logins():
        session.clear()
    return redirect(url_for("console.login"), 303)


@bp.post("/switch/tenant")
def switch_tenant() -> Any:
    """Make another logged-in tenant the active one."""
    try:
        wanted = int(request.form.get("tenant_id", ""))
    except ValueError:
        wanted = -1
    if any(e["t"] == wanted for e in logins()):
        session["active"], session["site"] = wanted, None
    return redirect(url_for("console.home"), 303)


@bp.post("/switch/site")
@page()
def switch_site(ctx: Ctx) -> Any:
    """Narrow the pages to one site of the operator's scope (empty: all of them)."""
    raw = request.form.get("site_id", "")
    allowed = {site.id for site in sites_for(ctx.session, ctx.operator)}
    session["site"] = int(raw) if raw.isdigit() and int(raw) in allowed else None
    return redirect(safe_next(request.form.get("next")), 303)


@bp.post("/language")
def language() -> Any:
    """Choose the console language for this browser session."""
    lang = request.form.get("lang", "")
    if lang in LANGUAGES:
        session["lang"] = lang
    return redirect(safe_next(request.form.get("next")), 303)


@bp.route("/profile", methods=["GET", "POST"])
@page()
def profile(ctx: Ctx) -> Any:
    """The operator's own page: turn on a TOTP second factor."""
    uri = None
    if request.method == "POST":
        if not confirmed():
            return confirm_page(
                _("Turn on two-factor login"),
                _(
                    "From the next login on you need the code of an authenticator app. "
                    "Scan the code shown on the next page before you log out."
                ),
            )
        uri = authz.enable_totp(
            ctx.session, ctx.operator, actor=ctx.actor, now=ctx.now, box=state().box
        )
        flash(_("Two-factor login is on."), "success")
    secret = uri.split("secret=", 1)[1].split("&", 1)[0] if uri else None
    return render("console/profile.html", uri=uri, secret=secret)
