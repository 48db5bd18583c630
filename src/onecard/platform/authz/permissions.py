"""Permission names: the core's, plus those modules register through ``onecard_permissions``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Permission:
    """A permission name (``area.action``) with a human label."""

    name: str
    label: str
    default_roles: tuple[str, ...] = ("tenant_admin",)


CORE_PERMISSIONS: tuple[Permission, ...] = (
    Permission("tenant.manage", "Manage sites, org units and tenant settings"),
    Permission("tenant.modules", "Switch modules on and off"),
    Permission(
        "devices.view", "View terminals, their health and records", ("tenant_admin", "auditor")
    ),
    Permission("devices.manage", "Register terminals, rotate credentials, send commands"),
    Permission("people.view", "View people", ("tenant_admin", "card_centre", "finance", "auditor")),
    Permission("people.edit", "Create and edit people", ("tenant_admin", "card_centre")),
    Permission("people.import", "Import people from files", ("tenant_admin", "card_centre")),
    Permission("people.delete", "Delete people (with approval)", ("tenant_admin", "card_centre")),
    Permission("cards.view", "View cards", ("tenant_admin", "card_centre", "finance", "auditor")),
    Permission("cards.issue", "Issue cards", ("tenant_admin", "card_centre")),
    Permission("cards.report_loss", "Report cards lost", ("tenant_admin", "card_centre")),
    Permission("cards.freeze", "Freeze cards", ("tenant_admin", "card_centre")),
    Permission("cards.unfreeze", "Unfreeze cards (with approval)", ("tenant_admin", "card_centre")),
    Permission("cards.replace", "Replace cards", ("tenant_admin", "card_centre")),
    Permission("cards.return", "Take cards back and refund", ("tenant_admin", "card_centre")),
    Permission(
        "cards.load", "Authorise online loads onto CPU cards", ("tenant_admin", "card_centre")
    ),
    Permission("clearing.submit", "Submit offline clearing records", ("tenant_admin", "finance")),
    Permission(
        "accounts.view",
        "View accounts and statements",
        ("tenant_admin", "card_centre", "finance", "auditor"),
    ),
    Permission("accounts.top_up", "Top up purses", ("tenant_admin", "card_centre", "finance")),
    Permission("accounts.refund", "Refund purses", ("tenant_admin", "finance")),
    Permission("accounts.adjust", "Manual adjustments", ("tenant_admin", "finance")),
    Permission("accounts.subsidy", "Grant subsidies", ("tenant_admin", "finance")),
    Permission("ledger.view", "View the journal", ("tenant_admin", "finance", "auditor")),
    Permission("audit.view", "View the audit trail", ("tenant_admin", "auditor")),
    Permission("operators.manage", "Manage operators and roles"),
    Permission("approvals.decide", "Approve or reject requests", ("tenant_admin", "finance")),
    Permission(
        "approvals.view",
        "View approval requests",
        ("tenant_admin", "card_centre", "finance", "auditor"),
    ),
)

DEFAULT_ROLES = {
    "tenant_admin": "Everything in the tenant",
    "card_centre": "Card centre counter staff",
    "finance": "Finance staff",
    "auditor": "Read-only audit",
}


_registered: dict[str, Permission] = {p.name: p for p in CORE_PERMISSIONS}


def register_permissions(permissions: tuple[Permission, ...]) -> None:
    """Add module permissions at boot (the plugin host validates names and duplicates)."""
    for permission in permissions:
        _registered[permission.name] = permission


def reset_to_core() -> None:
    """Forget module permissions (used when the plugin host is rebuilt, e.g. in tests)."""
    _registered.clear()
    _registered.update({p.name: p for p in CORE_PERMISSIONS})


def all_permissions() -> dict[str, Permission]:
    """Every known permission by name."""
    return dict(_registered)
