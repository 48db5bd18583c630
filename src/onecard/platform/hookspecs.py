"""The hook catalogue: the only way a module extends the platform.

Every hook takes keyword arguments and is named ``onecard_*``. *Startup* hooks are called once
at boot on the whole plugin manager; *tenant* hooks are called through
:meth:`onecard.platform.registry.Registry.hooks_for`, which leaves out modules switched off for
that tenant. Collect hooks return iterables (or ``None``) that the platform flattens.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pluggy

PROJECT = "onecard"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def onecard_permissions() -> Iterable[Any]:
    """Startup, collect: :class:`~onecard.platform.authz.permissions.Permission` objects.

    Names must start with ``<module key>.``; duplicates fail the boot.
    """


@hookspec
def onecard_audit_types() -> Iterable[str]:
    """Startup, collect: dotted audit event types the module records (``canteen.meal.sold``)."""


@hookspec
def onecard_account_kinds() -> Iterable[str]:
    """Startup, collect: ledger account kinds the module opens (``canteen.merchant``)."""


@hookspec
def onecard_blueprints() -> Iterable[Any]:
    """Startup, collect: Flask blueprints; one without its own ``url_prefix`` is mounted at
    ``/m/<module key>/``. Console pages use the console's ``page`` decorator (login,
    permission, tenant scope, CSRF, menu)."""


@hookspec
def onecard_socketio_namespaces() -> Iterable[Any]:
    """Startup, collect: ``flask_socketio.Namespace`` objects (mounted) and alarm sources
    (``onecard.web.alarms.AlarmSource``) whose alarms ``/live`` pushes to tenants with the
    module on."""


@hookspec
def onecard_mqtt_routes() -> Iterable[Any]:
    """Startup, collect: topic routes the bridge dispatches to the module's handlers."""


@hookspec
def onecard_cli_commands() -> Iterable[Any]:
    """Startup, collect: click commands added under ``onecard <module key> ...``."""


@hookspec
def onecard_menu_items(tenant_id: int, permissions: frozenset[str]) -> Iterable[Any]:
    """Tenant, collect: :class:`~onecard.platform.manifest.MenuItem` objects for the console."""


@hookspec
def onecard_device_kinds() -> Iterable[Any]:
    """Startup, collect: device kinds the module owns, with their config schemas."""


@hookspec
def onecard_authorize_tap(tap: Any) -> Any:
    """Tenant, collect: a decision on a card tap, or ``None`` when it is not yours.

    Any deny wins; if nobody allows, the tap is denied (silence denies). Must not write.
    """


@hookspec
def onecard_tap_recorded(tap: Any, decision: Any, session: Any) -> None:
    """Tenant, notify: inside a tap's transaction, after its postings and its tap record.

    ``decision`` is the platform's outcome (allow, reason, ``entry_ids`` of the postings made).
    The module may write its own facts through ``session`` (a canteen sale); raising rolls the
    whole tap back and the device is answered ``INTERNAL_ERROR``. Replays are not notified.
    """


@hookspec
def onecard_tap_completed(tap: Any, outcome: Any) -> None:
    """Tenant, notify: after a tap's transaction committed (statistics, live feed)."""


@hookspec
def onecard_records_stored(device: Any, records: Any, session: Any, now: Any) -> None:
    """Tenant, notify: offline records a device uploaded were stored for the first time.

    Called inside the ingest transaction, once per batch, with only the records that batch
    stored new (a replayed or duplicated record is never passed twice): ``device`` is the
    sender's :class:`~onecard.platform.devices.services.DeviceRef`, ``records`` a sequence of
    :class:`~onecard.platform.devices.ingest.StoredRecord`. A module posts what the records say
    (an offline sale) through ``session``. It runs in a savepoint: raising rolls back only the
    module's writes, the records stay stored and acknowledged, and the failure is logged and
    counted, so the module's own processing must be idempotent per ``(device, epoch, seq)``
    and able to re-run records it has not processed.
    """


@hookspec
def onecard_card_event(event: Any) -> None:
    """Tenant, notify: a card was issued, lost, unfrozen, replaced, returned or expired."""


@hookspec
def onecard_validate_posting(request: Any) -> Iterable[str]:
    """Tenant, collect: problems with a proposed posting; any problem rejects it."""


@hookspec
def onecard_posted(entry: Any) -> None:
    """Tenant, notify: an entry was posted (after commit)."""


@hookspec
def onecard_report_providers() -> Iterable[Any]:
    """Startup, collect: report providers shown in the reports menu."""


@hookspec
def onecard_tenant_settings_schema() -> Iterable[Any]:
    """Startup, collect: the module's tenant-level settings with types and defaults."""
