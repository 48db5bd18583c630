"""``/auth``: log in for a bearer token, log out, who am I, enable TOTP."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from onecard.platform.authz import services as authz
from onecard.platform.authz.models import Operator
from onecard.platform.errors import AuthenticationFailed, NotFound
from onecard.platform.tenants.models import Tenant
from onecard.platform.tenants.services import get_tenant_by_slug
from onecard.web.api.base import Call, endpoint
from onecard.web.problems import TooManyRequests
from onecard.web.state import state


class LoginIn(BaseModel):
    """Credentials of an operator of ``tenant`` (platform administrators: ``_platform``)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    tenant: str = Field(min_length=1, max_length=40)
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    totp: str | None = Field(default=None, pattern=r"^[0-9]{6}$")


class LoginOut(BaseModel):
    """A bearer token and when it expires."""

    token: str
    token_type: str = "Bearer"  # noqa: S105 - the scheme name, not a secret
    expires_at: datetime
    operator_id: int
    tenant: str


@endpoint("POST", "/auth/login", tag="auth", body=LoginIn, response=LoginOut, public=True)
def login(call: Call) -> Any:
    """Log in and receive a bearer token."""
    st = state()
    ip = request.remote_addr or "?"
    if st.throttle.blocked(ip):
        raise TooManyRequests("too many failed logins from this address; wait a few minutes")
    body: LoginIn = call.body
    tenant = _tenant_or_none(call, body.tenant)
    result = authz.login(
        call.session,
        tenant,
        body.username,
        body.password,
        totp=body.totp,
        now=call.now,
        policy=st.policy,
        box=st.box,
    )
    call.session.commit()  # keep failure counters and audit even when refusing
    if not result.ok:
        st.throttle.failed(ip)
        raise AuthenticationFailed(result.reason)
    assert result.expires_at is not None
    assert result.operator_id is not None
    assert result.token is not None
    assert tenant is not None
    return LoginOut(
        token=result.token,
        expires_at=result.expires_at,
        operator_id=result.operator_id,
        tenant=tenant.slug,
    ).model_dump(mode="json")


def _tenant_or_none(call: Call, slug: str) -> Tenant | None:
    try:
        return get_tenant_by_slug(call.session, slug)
    except NotFound:
        return None


@endpoint("POST", "/auth/logout", tag="auth", status=204)
def logout(call: Call) -> Any:
    """Revoke the bearer token of this request."""
    token = request.headers.get("Authorization", "").partition(" ")[2].strip()
    authz.revoke_token(call.session, token, now=call.now)
    return {}, 204


@endpoint("GET", "/auth/me", tag="auth")
def me(call: Call) -> Any:
    """The operator behind the token, with permissions and menu."""
    actor = call.actor
    assert call.tenant is not None
    return {
        "operator_id": actor.operator_id,
        "username": actor.id,
        "tenant": call.tenant.slug,
        "tenant_name": call.tenant.name,
        "is_platform_admin": actor.is_platform_admin,
        "permissions": sorted(actor.permissions),
        "org_unit_scope": None if actor.org_unit_scope is None else sorted(actor.org_unit_scope),
    }


@endpoint("POST", "/auth/totp", tag="auth", status=201)
def enable_totp(call: Call) -> Any:
    """Turn on a TOTP second factor for yourself; returns the provisioning URI once."""
    operator = call.session.scalar(select(Operator).where(Operator.id == call.actor.operator_id))
    assert operator is not None
    uri = authz.enable_totp(call.session, operator, actor=call.actor, now=call.now, box=state().box)
    return {"provisioning_uri": uri}
