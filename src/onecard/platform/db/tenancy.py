"""Tenant scoping by construction.

Every tenant-owned model mixes in :class:`TenantScoped`. A ``do_orm_execute`` listener adds
``tenant_id = :current`` to every ORM SELECT/UPDATE/DELETE (joins and relationship loads too)
and raises :class:`TenantScopeMissing` when no tenant is in scope. A ``before_flush`` listener
stamps new rows with the current tenant and refuses rows of another tenant. The only way around
it is ``with unscoped(reason=...)``, used by platform-administrator code paths and tools.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar, cast

from sqlalchemy import ForeignKey, Table, event
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column, with_loader_criteria
from sqlalchemy.sql import visitors

from onecard.platform.db.base import Base, BigId
from onecard.platform.errors import TenantScopeMissing

_current_tenant: ContextVar[int | None] = ContextVar("onecard_tenant", default=None)
_unscoped_reason: ContextVar[str | None] = ContextVar("onecard_unscoped", default=None)


class TenantScoped:
    """Mixin for rows owned by one tenant."""

    tenant_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("tenants.id", ondelete="RESTRICT"), index=True
    )


def current_tenant_id() -> int | None:
    """The tenant in scope, or ``None``."""
    return _current_tenant.get()


def require_tenant_id() -> int:
    """The tenant in scope; raises :class:`TenantScopeMissing` when there is none."""
    tid = _current_tenant.get()
    if tid is None:
        raise TenantScopeMissing("no tenant in scope for a tenant-owned query")
    return tid


@contextmanager
def tenant_scope(tenant_id: int) -> Iterator[int]:
    """Run the block with ``tenant_id`` in scope (restored afterwards, thread/task safe)."""
    token = _current_tenant.set(tenant_id)
    try:
        yield tenant_id
    finally:
        _current_tenant.reset(token)


@contextmanager
def unscoped(*, reason: str) -> Iterator[None]:
    """Disable tenant filtering for the block. ``reason`` documents why at the call site."""
    if not reason:
        raise ValueError("unscoped() needs a reason")
    token = _unscoped_reason.set(reason)
    try:
        yield
    finally:
        _unscoped_reason.reset(token)


def is_unscoped() -> bool:
    """True inside ``unscoped()``."""
    return _unscoped_reason.get() is not None


T = TypeVar("T")


def get_scoped(session: Session, cls: type[T], ident: object) -> T | None:
    """``session.get`` that never returns another tenant's row.

    ``Session.get`` answers from the identity map without a query when the object is already
    loaded, so the tenant criteria would not apply to a session that served another tenant
    before (the bridge does). This checks the loaded object's tenant as well.
    """
    obj = session.get(cls, ident)
    if obj is None or _unscoped_reason.get() is not None:
        return obj
    if isinstance(obj, TenantScoped) and obj.tenant_id != require_tenant_id():
        return None
    return obj


@event.listens_for(Session, "do_orm_execute")
def _add_tenant_criteria(state: ORMExecuteState) -> None:
    if state.is_column_load or state.is_relationship_load:
        return  # the top-level statement already carries the criteria to these loads
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if _unscoped_reason.get() is not None:
        return
    tid = _current_tenant.get()
    if tid is None:
        if _touches_scoped_table(state.statement):
            raise TenantScopeMissing("no tenant in scope for a tenant-owned query")
        return  # platform tables only (tenants), nothing to filter
    state.statement = state.statement.options(
        with_loader_criteria(TenantScoped, lambda cls: cls.tenant_id == tid, include_aliases=True)
    )


def _scoped_tables() -> frozenset[Table]:
    return frozenset(
        cast(Table, m.local_table)
        for m in Base.registry.mappers
        if issubclass(m.class_, TenantScoped)
    )


def _touches_scoped_table(statement: Any) -> bool:
    scoped = _scoped_tables()
    return any(isinstance(el, Table) and el in scoped for el in visitors.iterate(statement))


@event.listens_for(Session, "before_flush")
def _stamp_new_rows(session: Session, _ctx: Any, _instances: Any) -> None:
    if _unscoped_reason.get() is not None:
        return
    for obj in session.new:
        if isinstance(obj, TenantScoped):
            tid = require_tenant_id()
            if obj.tenant_id is None:
                obj.tenant_id = tid
            elif obj.tenant_id != tid:
                raise TenantScopeMissing("refusing to write a row of another tenant")
