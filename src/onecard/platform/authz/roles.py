"""Default roles a new tenant starts with."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from onecard.platform.authz.models import Role
from onecard.platform.authz.permissions import DEFAULT_ROLES, all_permissions


def create_default_roles(session: Session, *, now: datetime) -> list[Role]:
    """Create the tenant's default roles from every permission's ``default_roles``."""
    roles = []
    for name, description in DEFAULT_ROLES.items():
        perms = sorted(p.name for p in all_permissions().values() if name in p.default_roles)
        role = Role(name=name, description=description, permissions=perms)
        session.add(role)
        roles.append(role)
    session.flush()
    return roles
