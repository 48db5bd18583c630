"""Tables of tenants, sites, org units and per-tenant module switches."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from onecard.platform.db.base import Base, BigId, IdMixin
from onecard.platform.db.tenancy import TenantScoped


class Tenant(IdMixin, Base):
    """An organisation (the "headquarters"). Not tenant-scoped itself: looked up by slug."""

    __tablename__ = "tenants"

    slug: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    is_platform: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]


class Site(IdMixin, TenantScoped, Base):
    """A campus, branch or park of a tenant; local times are shown in its IANA zone."""

    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("tenant_id", "code"),)

    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))


class OrgUnit(IdMixin, TenantScoped, Base):
    """A department, class or team; org units form a tree, optionally tied to a site."""

    __tablename__ = "org_units"
    __table_args__ = (UniqueConstraint("tenant_id", "code"),)

    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    parent_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("org_units.id"))
    site_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("sites.id"))


class TenantModule(IdMixin, TenantScoped, Base):
    """Whether a module is switched on for a tenant, and its tenant-level settings."""

    __tablename__ = "tenant_modules"
    __table_args__ = (UniqueConstraint("tenant_id", "module_key"),)

    module_key: Mapped[str] = mapped_column(String(40))
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    changed_at: Mapped[datetime]
