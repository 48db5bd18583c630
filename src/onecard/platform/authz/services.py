"""Operators and roles, login with throttling, lockout and TOTP, and bearer tokens.

Login is the one service that must keep a record of failure: :func:`login` returns a
:class:`LoginResult` instead of raising, so the caller commits the failure counter and the
audit event before answering 401.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.platform.actors import Actor
from onecard.platform.audit.record import record
from onecard.platform.authz.models import ApiToken, Operator, OperatorRole, Role
from onecard.platform.authz.permissions import all_permissions
from onecard.platform.clock import as_utc
from onecard.platform.db.tenancy import get_scoped, tenant_scope, unscoped
from onecard.platform.errors import (
    AuthenticationFailed,
    Conflict,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from onecard.platform.secrets import SecretBox
from onecard.platform.tenants.models import Tenant
from onecard.platform.tenants.services import org_unit_subtrees, org_units_of_sites

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("timing-equaliser-not-a-password")
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")


@dataclass(frozen=True)
class AuthPolicy:
    """Login rules taken from settings."""

    max_failures: int = 5
    lockout_minutes: int = 15
    token_ttl_minutes: int = 720
    password_min_length: int = 10


def hash_password(password: str, policy: AuthPolicy) -> str:
    """Argon2id hash of ``password`` after the length rule."""
    if len(password) < policy.password_min_length:
        raise ValidationFailed(
            f"password must be at least {policy.password_min_length} characters", field="password"
        )
    if len(password) > 256:
        raise ValidationFailed("password is too long", field="password")
    return _hasher.hash(password)


def create_role(
    session: Session,
    name: str,
    permissions: list[str],
    *,
    actor: Actor,
    now: datetime,
    description: str = "",
) -> Role:
    """Create a role; every permission must be a registered name."""
    actor.ensure("operators.manage")
    unknown = sorted(set(permissions) - set(all_permissions()))
    if unknown:
        raise ValidationFailed(f"unknown permission {unknown[0]}", field="permissions")
    if session.scalar(select(Role.id).where(Role.name == name)) is not None:
        raise Conflict(f"role {name} already exists", field="name")
    role = Role(name=name, description=description, permissions=sorted(set(permissions)))
    session.add(role)
    session.flush()
    record(
        session,
        "role.created",
        actor=actor,
        now=now,
        object_type="role",
        object_id=role.id,
        data={"name": name, "permissions": role.permissions},
    )
    return role


def create_operator(
    session: Session,
    username: str,
    password: str,
    *,
    actor: Actor,
    now: datetime,
    policy: AuthPolicy,
    display_name: str = "",
    roles: list[str] = (),  # type: ignore[assignment]
    scope: dict[str, list[int]] | None = None,
    is_platform_admin: bool = False,
) -> Operator:
    """Create an operator in the tenant in scope with the named roles."""
    actor.ensure("operators.manage")
    if is_platform_admin and not (actor.is_platform_admin or actor.type == "system"):
        raise PermissionDenied("only platform administrators create platform administrators")
    if not USERNAME_RE.match(username):
        raise ValidationFailed("username must be 2-64 of a-z, 0-9, '.', '_', '-'", field="username")
    if session.scalar(select(Operator.id).where(Operator.username == username)) is not None:
        raise Conflict(f"operator {username} already exists", field="username")
    operator = Operator(
        username=username,
        display_name=display_name or username,
        password_hash=hash_password(password, policy),
        scope=_clean_scope(scope),
        is_platform_admin=is_platform_admin,
        created_at=now,
    )
    session.add(operator)
    session.flush()
    set_roles(session, operator, list(roles), actor=actor, now=now, audit=False)
    record(
        session,
        "operator.created",
        actor=actor,
        now=now,
        object_type="operator",
        object_id=operator.id,
        data={"username": username, "roles": list(roles), "scope": operator.scope},
    )
    return operator


def _clean_scope(scope: dict[str, list[int]] | None) -> dict[str, Any]:
    scope = scope or {}
    unknown = set(scope) - {"org_units", "sites"}
    if unknown:
        raise ValidationFailed(f"unknown scope key {sorted(unknown)[0]}", field="scope")
    return {k: sorted({int(v) for v in vals}) for k, vals in scope.items() if vals}


def set_roles(
    session: Session,
    operator: Operator,
    role_names: list[str],
    *,
    actor: Actor,
    now: datetime,
    audit: bool = True,
) -> None:
    """Replace the operator's roles with ``role_names`` (all must exist in the tenant)."""
    actor.ensure("operators.manage")
    roles = list(session.scalars(select(Role).where(Role.name.in_(role_names))))
    missing = sorted(set(role_names) - {r.name for r in roles})
    if missing:
        raise NotFound(f"role {missing[0]} not found", field="roles")
    for link in session.scalars(
        select(OperatorRole).where(OperatorRole.operator_id == operator.id)
    ):
        session.delete(link)
    session.flush()
    session.add_all(OperatorRole(operator_id=operator.id, role_id=r.id) for r in roles)
    session.flush()
    if audit:
        record(
            session,
            "operator.roles_changed",
            actor=actor,
            now=now,
            object_type="operator",
            object_id=operator.id,
            data={"roles": sorted(role_names)},
        )


def actor_for(session: Session, operator: Operator) -> Actor:
    """The :class:`Actor` of ``operator``: role permissions and expanded data scope."""
    perms: set[str] = set()
    stmt = (
        select(Role.permissions)
        .join(OperatorRole, OperatorRole.role_id == Role.id)
        .where(OperatorRole.operator_id == operator.id)
    )
    for names in session.scalars(stmt):
        perms.update(names)
    return Actor(
        type="operator",
        id=operator.username,
        tenant_id=operator.tenant_id,
        operator_id=operator.id,
        permissions=frozenset(perms),
        is_platform_admin=operator.is_platform_admin,
        org_unit_scope=_expand_scope(session, operator.scope or {}),
    )


def _expand_scope(session: Session, scope: dict[str, Any]) -> frozenset[int] | None:
    if not scope.get("org_units") and not scope.get("sites"):
        return None
    units = set(org_unit_subtrees(session, scope.get("org_units", [])))
    units |= org_units_of_sites(session, scope.get("sites", []))
    return frozenset(units)


@dataclass(frozen=True)
class LoginResult:
    """Outcome of :func:`login`. On success ``token`` is the only copy of the bearer token."""

    ok: bool
    reason: str = ""
    token: str | None = None
    operator_id: int | None = None
    tenant_id: int | None = None
    expires_at: datetime | None = None

    def raise_for_failure(self) -> None:
        """Raise the :class:`AuthenticationFailed` this result stands for."""
        if not self.ok:
            raise AuthenticationFailed(self.reason)


def login(
    session: Session,
    tenant: Tenant | None,
    username: str,
    password: str,
    *,
    totp: str | None,
    now: datetime,
    policy: AuthPolicy,
    box: SecretBox,
) -> LoginResult:
    """Check credentials; count failures, lock out after ``policy.max_failures``."""
    if tenant is None:
        _hasher.verify(_DUMMY_HASH, "timing-equaliser-not-a-password")
        return LoginResult(False, "invalid credentials")
    with tenant_scope(tenant.id):
        operator = session.scalar(select(Operator).where(Operator.username == username))
        if operator is None or not operator.active:
            _hasher.verify(_DUMMY_HASH, "timing-equaliser-not-a-password")
            return LoginResult(False, "invalid credentials")
        if operator.locked_until and as_utc(operator.locked_until) > now:
            _audit_login(session, operator, "operator.login_refused_locked", now)
            return LoginResult(False, "account locked; try again later")
        reason = _check_secrets(operator, password, totp, now, box)
        if reason:
            return _fail(session, operator, reason, now, policy)
        return _succeed(session, operator, now, policy)


def _check_secrets(
    operator: Operator, password: str, totp: str | None, now: datetime, box: SecretBox
) -> str:
    try:
        _hasher.verify(operator.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return "invalid credentials"
    if operator.totp_secret_enc:
        if not totp:
            return "second factor required"
        step = _totp_step(box.open(operator.totp_secret_enc), totp, now)
        if step is None or (
            operator.totp_last_step is not None and step <= operator.totp_last_step
        ):
            return "invalid second factor"
        operator.totp_last_step = step
    return ""


def _totp_step(secret: str, code: str, now: datetime) -> int | None:
    totp = pyotp.TOTP(secret)
    for drift in (0, -1, 1):  # accept one step of clock drift either way
        at = now + timedelta(seconds=30 * drift)
        if secrets.compare_digest(totp.at(at), code.strip()):
            return int(at.timestamp()) // 30
    return None


def _fail(
    session: Session, operator: Operator, reason: str, now: datetime, policy: AuthPolicy
) -> LoginResult:
    operator.failed_logins += 1
    if operator.failed_logins >= policy.max_failures:
        operator.locked_until = now + timedelta(minutes=policy.lockout_minutes)
        operator.failed_logins = 0
        _audit_login(session, operator, "operator.locked", now)
    _audit_login(session, operator, "operator.login_failed", now, reason=reason)
    return LoginResult(False, reason)


def _succeed(
    session: Session, operator: Operator, now: datetime, policy: AuthPolicy
) -> LoginResult:
    operator.failed_logins, operator.locked_until, operator.last_login_at = 0, None, now
    token = secrets.token_urlsafe(32)
    expires = now + timedelta(minutes=policy.token_ttl_minutes)
    session.add(
        ApiToken(
            token_hash=_token_hash(token),
            operator_id=operator.id,
            created_at=now,
            expires_at=expires,
        )
    )
    _audit_login(session, operator, "operator.logged_in", now)
    return LoginResult(
        True, token=token, operator_id=operator.id, tenant_id=operator.tenant_id, expires_at=expires
    )


def _audit_login(
    session: Session, operator: Operator, type: str, now: datetime, **data: Any
) -> None:
    actor = Actor(
        type="operator", id=operator.username, tenant_id=operator.tenant_id, operator_id=operator.id
    )
    record(
        session,
        type,
        actor=actor,
        now=now,
        object_type="operator",
        object_id=operator.id,
        data=data,
    )


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def resolve_token(session: Session, token: str, *, now: datetime) -> Operator:
    """The active operator behind a bearer token; :class:`AuthenticationFailed` otherwise."""
    with unscoped(reason="bearer token lookup happens before the tenant is known"):
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _token_hash(token)))
        if row is None or row.revoked_at is not None or as_utc(row.expires_at) <= now:
            raise AuthenticationFailed("invalid or expired token")
        operator = session.get(Operator, row.operator_id)
    if operator is None or not operator.active:
        raise AuthenticationFailed("invalid or expired token")
    return operator


def revoke_token(session: Session, token: str, *, now: datetime) -> None:
    """Log out: the token stops working at once."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _token_hash(token)))
    if row is not None and row.revoked_at is None:
        row.revoked_at = now


def enable_totp(
    session: Session, operator: Operator, *, actor: Actor, now: datetime, box: SecretBox
) -> str:
    """Give ``operator`` a new TOTP seed; returns the provisioning URI to show once."""
    if actor.operator_id != operator.id:
        actor.ensure("operators.manage")
    seed = pyotp.random_base32()
    operator.totp_secret_enc, operator.totp_last_step = box.seal(seed), None
    record(
        session,
        "operator.totp_enabled",
        actor=actor,
        now=now,
        object_type="operator",
        object_id=operator.id,
    )
    return pyotp.TOTP(seed).provisioning_uri(name=operator.username, issuer_name="OneCard")


def get_operator(session: Session, operator_id: int) -> Operator:
    """The operator ``operator_id`` of the tenant in scope."""
    operator = get_scoped(session, Operator, operator_id)
    if operator is None:
        raise NotFound(f"operator {operator_id} not found")
    return operator
