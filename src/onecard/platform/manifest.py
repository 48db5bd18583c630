"""What a module declares about itself (pure metadata, readable without importing its code)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

KEY_RE = re.compile(r"^[a-z][a-z0-9_]{1,30}$")
RESERVED_KEYS = frozenset(
    {
        "platform",
        "core",
        "ledger",
        "audit",
        "cards",
        "people",
        "tenants",
        "authz",
        "operators",
        "devices",
        "keys",
        "api",
        "web",
        "approvals",
        "accounts",
        "counters",
        "sites",
        "roles",
    }
)


@dataclass(frozen=True)
class MenuItem:
    """A console menu entry; shown when the operator holds ``permission``."""

    key: str
    label: str
    endpoint: str
    permission: str | None = None
    icon: str = ""
    order: int = 100


@dataclass(frozen=True)
class ModuleManifest:
    """A module's identity. ``key`` is also its table prefix (``<key>_``) and URL prefix."""

    key: str
    name: str
    version: str
    package: str
    description: str = ""
    requires: frozenset[str] = frozenset()
    device_kinds: tuple[str, ...] = ()
    default_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def table_prefix(self) -> str:
        """Every table of the module starts with this."""
        return f"{self.key}_"
