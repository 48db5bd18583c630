"""Canteen's hook implementations: a few lines each, calling the module's services."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from onecard.modules.canteen import cli, recordflow, services, tapflow, terminalkeys
from onecard.modules.canteen.alarms import ReconCaseAlarms
from onecard.platform.authz.permissions import Permission
from onecard.platform.devices.bundles import DeviceKindSpec
from onecard.platform.devices.taps import TapDecision
from onecard.platform.hookspecs import hookimpl
from onecard.platform.ledger.models import Entry
from onecard.platform.manifest import MenuItem

log = logging.getLogger(__name__)

ADMIN, CASHIER, FINANCE = "tenant_admin", "canteen_cashier", "finance"

AUDIT_TYPES = (
    "canteen.merchant.created",
    "canteen.pos.added",
    "canteen.pos.key_provisioned",
    "canteen.meal_periods.set",
    "canteen.rule.set",
    "canteen.allowance.set",
    "canteen.menu.item_added",
    "canteen.sale.online",
    "canteen.sale.offline",
    "canteen.sale.decided_online",
    "canteen.sale.refunded",
    "canteen.case.opened",
    "canteen.case.settled",
    "canteen.settlement.created",
    "canteen.payout.requested",
    "canteen.payout.posted",
    "canteen.payout.rejected",
    "canteen.records.reprocessed",
)

POS_CONFIG = {
    "mode": "fixed",  # fixed | free | menu
    "lang": "zh",  # display language: zh | en
    "offline": {"enabled": True, "max_list_age_s": 86400},
    "beep": True,
}


@hookimpl
def onecard_permissions() -> Iterable[Permission]:
    return [
        Permission("canteen.view", "View canteen sales and statements", (ADMIN, FINANCE)),
        Permission("canteen.manage", "Set up merchants, POS, meal periods, rules, menus"),
        Permission("canteen.sell", "Sell meals at a POS", (ADMIN,)),
        Permission("canteen.refund", "Refund the last sale at a POS", (ADMIN,)),
        Permission("canteen.cases.settle", "Settle offline overspend cases", (ADMIN, FINANCE)),
        Permission("canteen.settle", "Run daily merchant settlement", (ADMIN, FINANCE)),
        Permission(
            "canteen.payout.approve",
            "Approve merchant payouts above the four-eyes threshold",
            (ADMIN, FINANCE),
        ),
        Permission("canteen.reprocess", "Re-run stored POS records", (ADMIN,)),
    ]


@hookimpl
def onecard_audit_types() -> Iterable[str]:
    return AUDIT_TYPES


@hookimpl
def onecard_account_kinds() -> Iterable[str]:
    return [services.MERCHANT_KIND]


@hookimpl
def onecard_menu_items(tenant_id: int, permissions: frozenset[str]) -> Iterable[MenuItem]:
    return [MenuItem("canteen", "Canteen", "canteen.index", "canteen.view", order=110)]


@hookimpl
def onecard_blueprints() -> Iterable[Any]:
    from onecard.modules.canteen.console import bp  # Flask only when the web app asks

    return [bp]


@hookimpl
def onecard_device_kinds() -> Iterable[DeviceKindSpec]:
    return [DeviceKindSpec("pos", module="canteen", defaults=POS_CONFIG, label="Canteen POS")]


@hookimpl
def onecard_authorize_tap(tap: Any) -> TapDecision | None:
    if getattr(tap, "module", None) != services.KEY:
        return None
    session = getattr(tap, "session", None)
    if session is None:  # the tap context does not (yet) hand modules a session
        log.error("canteen: tap %s arrived without a session; denied", tap.req_id)
        return TapDecision(False, "INTERNAL_ERROR", "", (), "no_session", services.KEY)
    return tapflow.authorize_tap(session, tap)


@hookimpl
def onecard_tap_recorded(tap: Any, decision: Any, session: Any) -> None:
    # Inside the tap's transaction, after the platform posted what canteen proposed.
    if getattr(tap, "module", None) != services.KEY or not decision.allow:
        return
    for entry_id in decision.entry_ids:
        entry = session.get(Entry, entry_id)
        if entry is not None and entry.source == services.KEY:
            tapflow.record_tap_sale(session, tap, entry_id, now=tap.now)


@hookimpl
def onecard_tap_completed(tap: Any, outcome: Any) -> None:
    # Runs after commit: nothing may be written here (the sale was recorded in
    # onecard_tap_recorded, inside the tap's transaction).
    if getattr(tap, "module", None) == services.KEY:
        log.debug("canteen tap %s: %s", tap.req_id, outcome.reason)


@hookimpl
def onecard_records_stored(device: Any, records: Any, session: Any, now: Any) -> None:
    # In the ingest transaction, inside a savepoint: raising undoes only canteen's writes and
    # the records stay stored for `onecard canteen reprocess`.
    if getattr(device, "module", None) != services.KEY:
        return
    if any(recordflow.is_sale_record(r) for r in records):
        keyring = terminalkeys.process_keyring()
        recordflow.process(session, device.pk, device.device_id, records, keyring=keyring, now=now)


@hookimpl
def onecard_socketio_namespaces() -> Iterable[Any]:
    # No panel namespace of its own: the reconciliation cases go to /live as alarms.
    return [ReconCaseAlarms()]


@hookimpl
def onecard_cli_commands() -> Iterable[Any]:
    return cli.COMMANDS


@hookimpl
def onecard_card_event(event: Any) -> None:
    # POS terminals refuse cards through the platform's blacklist list; canteen keeps no
    # whitelist of its own, so a card event needs nothing here yet.
    return None
