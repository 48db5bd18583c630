"""Who is acting: an operator, a device, or the system. Passed explicitly to every service."""

from __future__ import annotations

from dataclasses import dataclass, field

from onecard.platform.errors import PermissionDenied


@dataclass(frozen=True)
class Actor:
    """The authenticated party behind a call, with its permissions and data scope.

    ``org_unit_scope`` is ``None`` for "every org unit"; otherwise the set of org-unit ids
    (already expanded to their subtrees) whose people this actor may see and change.
    """

    type: str  # "operator" | "device" | "system"
    id: str | None
    tenant_id: int | None = None
    operator_id: int | None = None
    permissions: frozenset[str] = field(default_factory=frozenset)
    is_platform_admin: bool = False
    org_unit_scope: frozenset[int] | None = None

    @classmethod
    def system(cls, name: str, *, tenant_id: int | None = None) -> Actor:
        """An internal job (seed, scheduler, migration) with every permission."""
        return cls(type="system", id=name, tenant_id=tenant_id, permissions=frozenset({"*"}))

    def can(self, permission: str) -> bool:
        """True when the actor holds ``permission`` (or is the all-powerful system)."""
        return "*" in self.permissions or permission in self.permissions

    def ensure(self, permission: str) -> None:
        """Raise :class:`PermissionDenied` unless the actor holds ``permission``."""
        if not self.can(permission):
            raise PermissionDenied(f"missing permission {permission}", permission=permission)

    def sees_org_unit(self, org_unit_id: int | None) -> bool:
        """True when the data scope covers people of ``org_unit_id``."""
        if self.org_unit_scope is None:
            return True
        return org_unit_id is not None and org_unit_id in self.org_unit_scope
