"""The plugin host: finds modules, validates them, and calls their hooks per tenant.

Boot (:meth:`Registry.load`) fails with :class:`PluginError` on: a bad or reserved key, a
duplicate key, a missing or cyclic ``requires``, an unknown hook name in ``<package>.hooks``, a
table without the ``<key>_`` prefix, or a permission that is duplicated or outside the module's
namespace.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from onecard.platform import hookspecs
from onecard.platform.authz.permissions import (
    CORE_PERMISSIONS,
    Permission,
    register_permissions,
    reset_to_core,
)
from onecard.platform.db.base import Base
from onecard.platform.errors import PluginError
from onecard.platform.manifest import KEY_RE, RESERVED_KEYS, MenuItem, ModuleManifest

ENTRY_POINT_GROUP = "onecard.modules"

CORE_MENU: tuple[MenuItem, ...] = (
    MenuItem("people", "People", "console.people", "people.view", order=10),
    MenuItem("cards", "Cards", "console.cards", "cards.view", order=20),
    MenuItem("accounts", "Accounts", "console.accounts", "accounts.view", order=30),
    MenuItem("approvals", "Approvals", "console.approvals", "approvals.view", order=40),
    MenuItem("ledger", "Journal", "console.ledger", "ledger.view", order=50),
    MenuItem("reports", "Reports", "console.reports", "ledger.view", order=55),
    MenuItem("audit", "Audit", "console.audit", "audit.view", order=60),
    MenuItem("devices", "Devices", "console.devices", "devices.view", order=62),
    MenuItem("monitor", "Live monitor", "console.monitor", "devices.view", order=64),
    MenuItem("operators", "Operators", "console.operators", "operators.manage", order=70),
    MenuItem("settings", "Settings", "console.settings", "tenant.manage", order=80),
)


def discover_manifests() -> list[ModuleManifest]:
    """Load every manifest advertised under the ``onecard.modules`` entry point group."""
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        manifest = ep.load()
        if not isinstance(manifest, ModuleManifest):
            raise PluginError(f"entry point {ep.name} does not point at a ModuleManifest")
        if manifest.key != ep.name:
            raise PluginError(f"entry point {ep.name} names module {manifest.key}")
        found.append(manifest)
    return found


@dataclass
class Registry:
    """Validated modules, their plugin manager, and the merged permission catalogue."""

    modules: dict[str, ModuleManifest]
    pm: pluggy.PluginManager
    permissions: dict[str, Permission]
    _callers: dict[frozenset[str], Any] = field(default_factory=dict)

    @classmethod
    def load(cls, manifests: Iterable[ModuleManifest] | None = None) -> Registry:
        """Discover (or take) manifests, validate them, register hooks; fail the boot on error."""
        chosen = list(discover_manifests() if manifests is None else manifests)
        ordered = _validate_manifests(chosen)
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        for manifest in ordered:
            pm.register(_import_part(manifest, "hooks", required=True), name=manifest.key)
            _check_tables(manifest, _import_part(manifest, "models", required=False))
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"unknown hook: {exc}") from exc
        permissions = _collect_permissions(pm, {m.key for m in ordered})
        reset_to_core()
        register_permissions(tuple(permissions.values()))
        return cls({m.key: m for m in ordered}, pm, permissions)

    def hooks_for(self, enabled: frozenset[str]) -> Any:
        """A hook relay that calls only the modules in ``enabled`` (cached per set)."""
        relay = self._callers.get(enabled)
        if relay is None:
            relay = _SubsetRelay(self.pm, frozenset(self.modules) - enabled)
            self._callers[enabled] = relay
        return relay

    def check_module_key(self, key: str) -> ModuleManifest:
        """The manifest of ``key``; :class:`PluginError` for unknown modules."""
        if key not in self.modules:
            raise PluginError(f"unknown module {key}")
        return self.modules[key]

    def menu(
        self,
        tenant_id: int,
        enabled: frozenset[str],
        permissions: frozenset[str],
        order: list[str] | None = None,
        hidden: Iterable[str] = (),
    ) -> list[MenuItem]:
        """Core and enabled modules' menu items the operator may use, in the tenant's order."""
        items = list(CORE_MENU)
        for batch in self.hooks_for(enabled).onecard_menu_items(
            tenant_id=tenant_id, permissions=permissions
        ):
            items.extend(batch or ())
        allowed = [i for i in items if i.key not in set(hidden) and _may(i, permissions)]
        rank = {key: n for n, key in enumerate(order or [])}
        return sorted(allowed, key=lambda i: (rank.get(i.key, len(rank)), i.order, i.key))


def _may(item: MenuItem, permissions: frozenset[str]) -> bool:
    return item.permission is None or "*" in permissions or item.permission in permissions


class _SubsetRelay:
    """Attribute access returns a hook caller without the excluded modules."""

    def __init__(self, pm: pluggy.PluginManager, excluded: frozenset[str]) -> None:
        self._pm = pm
        self._excluded = [p for p in (pm.get_plugin(k) for k in excluded) if p is not None]

    def __getattr__(self, name: str) -> Any:
        if not self._excluded:
            return getattr(self._pm.hook, name)
        return self._pm.subset_hook_caller(name, remove_plugins=self._excluded)


def _validate_manifests(manifests: list[ModuleManifest]) -> list[ModuleManifest]:
    by_key: dict[str, ModuleManifest] = {}
    for m in manifests:
        if not KEY_RE.match(m.key) or m.key in RESERVED_KEYS:
            raise PluginError(f"module key {m.key!r} is invalid or reserved")
        if m.key in by_key:
            raise PluginError(f"two modules use the key {m.key!r}")
        by_key[m.key] = m
    graph = {m.key: set(m.requires) for m in manifests}
    for key, needs in graph.items():
        missing = needs - by_key.keys()
        if missing:
            raise PluginError(f"module {key} requires missing module {sorted(missing)[0]}")
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise PluginError(f"modules require each other in a cycle: {exc.args[1]}") from exc
    return [by_key[k] for k in order]


def _import_part(manifest: ModuleManifest, part: str, *, required: bool) -> ModuleType | None:
    name = f"{manifest.package}.{part}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name and not required:
            return None
        raise PluginError(f"module {manifest.key}: cannot import {name}: {exc}") from exc


def _check_tables(manifest: ModuleManifest, models: ModuleType | None) -> None:
    if models is None:
        return
    for mapper in Base.registry.mappers:
        cls = mapper.class_
        if not cls.__module__.startswith(manifest.package + "."):
            continue
        table = getattr(cls, "__tablename__", "")
        if not table.startswith(manifest.table_prefix):
            raise PluginError(
                f"module {manifest.key}: table {table!r} must start with {manifest.table_prefix!r}"
            )


def _collect_permissions(pm: pluggy.PluginManager, keys: set[str]) -> dict[str, Permission]:
    merged = {p.name: p for p in CORE_PERMISSIONS}
    for plugin_name, batch in _results_by_plugin(pm, "onecard_permissions").items():
        for permission in batch:
            if not permission.name.startswith(f"{plugin_name}."):
                raise PluginError(
                    f"module {plugin_name}: permission {permission.name} must start with "
                    f"'{plugin_name}.'"
                )
            if permission.name in merged:
                raise PluginError(f"permission {permission.name} is registered twice")
            merged[permission.name] = permission
    return merged


def _results_by_plugin(pm: pluggy.PluginManager, hook: str) -> Mapping[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for impl in getattr(pm.hook, hook).get_hookimpls():
        out[impl.plugin_name] = list(impl.function() or ())
    return out
