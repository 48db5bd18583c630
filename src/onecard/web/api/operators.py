"""``/operators``, ``/roles`` and ``/approvals``: who may do what, and the four-eyes queue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from onecard.platform.approvals import services as approvals
from onecard.platform.audit.record import record
from onecard.platform.authz import services as authz
from onecard.platform.authz.models import Operator, OperatorRole, Role
from onecard.platform.authz.permissions import all_permissions
from onecard.web.api.base import Call, Out, QueryModel, dump, endpoint, paged
from onecard.web.api.common import ApprovalOut
from onecard.web.state import state


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Scope(_In):
    """Data scope: empty lists mean the whole tenant."""

    org_units: list[int] = Field(default_factory=list, max_length=500)
    sites: list[int] = Field(default_factory=list, max_length=500)


class OperatorIn(_In):
    """A new operator."""

    username: str = Field(min_length=2, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]+$")
    password: str = Field(min_length=1, max_length=256)
    display_name: str = Field(default="", max_length=100)
    roles: list[str] = Field(default_factory=list, max_length=20)
    scope: Scope = Field(default_factory=Scope)


class OperatorPatch(_In):
    """Changes to an operator."""

    display_name: str | None = Field(default=None, max_length=100)
    roles: list[str] | None = Field(default=None, max_length=20)
    active: bool | None = None
    scope: Scope | None = None


class OperatorOut(Out):
    """An operator (never their password hash or TOTP seed)."""

    id: int
    username: str
    display_name: str
    active: bool
    is_platform_admin: bool
    scope: dict[str, Any]
    last_login_at: datetime | None
    locked_until: datetime | None
    created_at: datetime


class RoleIn(_In):
    """A new role."""

    name: str = Field(min_length=2, max_length=64, pattern=r"^[a-z0-9_]+$")
    description: str = Field(default="", max_length=200)
    permissions: list[str] = Field(max_length=200)


class RoleOut(Out):
    """A role."""

    id: int
    name: str
    description: str
    permissions: list[str]


class PageQuery(QueryModel):
    """Paging."""

    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0)


def _operator_json(call: Call, op: Operator) -> dict[str, Any]:
    roles = call.session.scalars(
        select(Role.name)
        .join(OperatorRole, OperatorRole.role_id == Role.id)
        .where(OperatorRole.operator_id == op.id)
    )
    return {
        **dump(OperatorOut, op),
        "roles": sorted(roles),
        "totp_enabled": bool(op.totp_secret_enc),
    }


@endpoint(
    "GET",
    "/operators",
    tag="operators",
    query=PageQuery,
    response=OperatorOut,
    list_response=True,
    permission="operators.manage",
)
def list_operators(call: Call) -> Any:
    """Operators of the tenant."""
    q: PageQuery = call.query
    total = call.session.scalar(select(func.count(Operator.id))) or 0
    rows = call.session.scalars(
        select(Operator).order_by(Operator.id).limit(q.limit).offset(q.offset)
    )
    return paged([_operator_json(call, o) for o in rows], total, q.limit, q.offset)


@endpoint(
    "POST",
    "/operators",
    tag="operators",
    body=OperatorIn,
    response=OperatorOut,
    status=201,
    permission="operators.manage",
)
def create_operator(call: Call) -> Any:
    """Create an operator with roles and a data scope."""
    body: OperatorIn = call.body
    op = authz.create_operator(
        call.session,
        body.username,
        body.password,
        actor=call.actor,
        now=call.now,
        policy=state().policy,
        display_name=body.display_name,
        roles=body.roles,
        scope=body.scope.model_dump(),
    )
    return _operator_json(call, op)


@endpoint(
    "GET",
    "/operators/{operator_id}",
    tag="operators",
    response=OperatorOut,
    permission="operators.manage",
)
def get_operator(call: Call) -> Any:
    """Read one operator."""
    return _operator_json(call, authz.get_operator(call.session, call.path["operator_id"]))


@endpoint(
    "PATCH",
    "/operators/{operator_id}",
    tag="operators",
    body=OperatorPatch,
    response=OperatorOut,
    permission="operators.manage",
)
def update_operator(call: Call) -> Any:
    """Change roles, scope, name or whether the operator may log in."""
    op = authz.get_operator(call.session, call.path["operator_id"])
    body: OperatorPatch = call.body
    if body.roles is not None:
        authz.set_roles(call.session, op, body.roles, actor=call.actor, now=call.now)
    changes = body.model_dump(exclude_unset=True, exclude={"roles"})
    if "scope" in changes:
        op.scope = {k: v for k, v in changes["scope"].items() if v}
    if body.display_name is not None:
        op.display_name = body.display_name
    if body.active is not None:
        op.active = body.active
    if changes:
        record(
            call.session,
            "operator.updated",
            actor=call.actor,
            now=call.now,
            object_type="operator",
            object_id=op.id,
            data=changes,
        )
    return _operator_json(call, op)


@endpoint(
    "GET",
    "/roles",
    tag="operators",
    response=RoleOut,
    list_response=True,
    permission="operators.manage",
)
def list_roles(call: Call) -> Any:
    """Roles of the tenant."""
    rows = list(call.session.scalars(select(Role).order_by(Role.name)))
    return paged([dump(RoleOut, r) for r in rows], len(rows), max(len(rows), 1), 0)


@endpoint(
    "POST",
    "/roles",
    tag="operators",
    body=RoleIn,
    response=RoleOut,
    status=201,
    permission="operators.manage",
)
def create_role(call: Call) -> Any:
    """Create a role from registered permission names."""
    body: RoleIn = call.body
    role = authz.create_role(
        call.session,
        body.name,
        body.permissions,
        actor=call.actor,
        now=call.now,
        description=body.description,
    )
    return dump(RoleOut, role)


@endpoint("GET", "/permissions", tag="operators")
def list_permissions(call: Call) -> Any:
    """Every registered permission (core and modules)."""
    return {
        "items": [
            {"name": p.name, "label": p.label}
            for p in sorted(all_permissions().values(), key=lambda p: p.name)
        ]
    }


class ApprovalsQuery(QueryModel):
    """Filter by status (pending, approved, rejected)."""

    status: str | None = Field(default=None, pattern=r"^(pending|approved|rejected)$")
    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0)


class DecisionIn(_In):
    """A note for the decision."""

    note: str = Field(default="", max_length=300)


@endpoint(
    "GET",
    "/approvals",
    tag="approvals",
    query=ApprovalsQuery,
    response=ApprovalOut,
    list_response=True,
    permission="approvals.view",
)
def list_approvals(call: Call) -> Any:
    """The four-eyes queue, newest first."""
    q: ApprovalsQuery = call.query
    rows, total = approvals.list_approvals(
        call.session, status=q.status, limit=q.limit, offset=q.offset
    )
    return paged([dump(ApprovalOut, a) for a in rows], total, q.limit, q.offset)


@endpoint(
    "GET",
    "/approvals/{approval_id}",
    tag="approvals",
    response=ApprovalOut,
    permission="approvals.view",
)
def get_approval(call: Call) -> Any:
    """Read one approval request."""
    return dump(ApprovalOut, approvals.get_approval(call.session, call.path["approval_id"]))


@endpoint(
    "POST",
    "/approvals/{approval_id}/approve",
    tag="approvals",
    body=DecisionIn,
    response=ApprovalOut,
)
def approve(call: Call) -> Any:
    """Approve (and carry out) a request filed by another operator."""
    approval = approvals.get_approval(call.session, call.path["approval_id"])
    approvals.decide(
        call.session, approval, True, actor=call.actor, now=call.now, note=call.body.note
    )
    return dump(ApprovalOut, approval)


@endpoint(
    "POST",
    "/approvals/{approval_id}/reject",
    tag="approvals",
    body=DecisionIn,
    response=ApprovalOut,
)
def reject(call: Call) -> Any:
    """Reject a request filed by another operator."""
    approval = approvals.get_approval(call.session, call.path["approval_id"])
    approvals.decide(
        call.session, approval, False, actor=call.actor, now=call.now, note=call.body.note
    )
    return dump(ApprovalOut, approval)
