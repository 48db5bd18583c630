"""Tables of operators, roles, role grants and API tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from onecard.platform.db.base import Base, BigId, IdMixin
from onecard.platform.db.tenancy import TenantScoped


class Operator(IdMixin, TenantScoped, Base):
    """A member of staff who uses the console or API. Never called a "user".

    Platform administrators are operators of the platform pseudo-tenant with
    ``is_platform_admin``. ``scope`` limits the operator to org units and sites
    (``{"org_units": [...], "sites": [...]}``; empty means the whole tenant).
    """

    __tablename__ = "operators"
    __table_args__ = (UniqueConstraint("tenant_id", "username"),)

    username: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(200))
    totp_secret_enc: Mapped[str | None] = mapped_column(String(200))
    # The last accepted TOTP time step: a code is good for one login only.
    totp_last_step: Mapped[int | None]
    is_platform_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    scope: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class Role(IdMixin, TenantScoped, Base):
    """A named set of permission names."""

    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(200), default="")
    permissions: Mapped[list[str]] = mapped_column(JSON, default=list)


class OperatorRole(IdMixin, TenantScoped, Base):
    """An operator holds a role."""

    __tablename__ = "operator_roles"
    __table_args__ = (UniqueConstraint("operator_id", "role_id"),)

    operator_id: Mapped[int] = mapped_column(BigId, ForeignKey("operators.id"), index=True)
    role_id: Mapped[int] = mapped_column(BigId, ForeignKey("roles.id"))


class ApiToken(IdMixin, TenantScoped, Base):
    """A bearer token issued at login; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    operator_id: Mapped[int] = mapped_column(BigId, ForeignKey("operators.id"), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
