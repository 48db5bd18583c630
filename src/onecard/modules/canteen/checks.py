"""Consistency of the canteen's online sales with the taps that made them.

Every online tap the platform allowed at a canteen POS made exactly one online sale and one
ledger entry (the tap's ``entry_ids``, the sale's ``entry_id``, code ``canteen.meal``); a denied
tap made neither; and no online sale or tap entry exists without its tap. The soak test and the
whole-path benchmark assert it beside ``ledger.reconcile.verify``; an operator can run it too.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.modules.canteen.models import Sale
from onecard.modules.canteen.services import MEAL_CODE
from onecard.modules.canteen.tapflow import POSTING_KEY_PREFIX, posting_key, sale_key
from onecard.platform.devices.models import DeviceTap
from onecard.platform.ledger.models import Entry


def tap_sale_problems(session: Session, taps: Sequence[tuple[str, DeviceTap]]) -> list[str]:
    """What is wrong between ``(device id, tap)`` pairs of canteen POS and the tenant's online
    sales and tap entries (the session's tenant); an empty list when they agree."""
    sales = {x.key: x for x in session.scalars(select(Sale).where(Sale.source == "online"))}
    tap_entries = select(Entry).where(Entry.idempotency_key.startswith(POSTING_KEY_PREFIX))
    entries = {e.idempotency_key: e for e in session.scalars(tap_entries)}
    problems: list[str] = []
    for device_id, tap in taps:
        sale = sales.pop(sale_key(device_id, tap.req_id), None)
        entry = entries.pop(posting_key(device_id, tap.req_id), None)
        problems += _mismatch(tap, sale, entry)
    problems += [f"online sale {key} has no tap" for key in sales]
    problems += [f"entry {key} has no tap" for key in entries]
    return problems


def _mismatch(tap: DeviceTap, sale: Sale | None, entry: Entry | None) -> list[str]:
    if not tap.allow:
        posted = sale is not None or entry is not None or bool(tap.entry_ids)
        return [f"denied tap {tap.req_id} ({tap.reason}) sold or posted"] if posted else []
    if sale is None or entry is None:
        return [f"allowed tap {tap.req_id}: sale {sale is not None}, entry {entry is not None}"]
    if list(tap.entry_ids) != [entry.id] or sale.entry_id != entry.id or entry.code != MEAL_CODE:
        return [f"allowed tap {tap.req_id}: entries {tap.entry_ids}, sale's {sale.entry_id}"]
    return []
