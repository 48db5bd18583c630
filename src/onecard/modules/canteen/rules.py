"""Canteen decision rules, pure: the server and the POS (deciding offline) run the same code.

The rules a POS applies alone (meal periods, holder rules, limits, the offline allowance) and
the offline sale record's MAC live on the device side, in
:mod:`onecard.device_agents.personalities.pos_rules` and
:mod:`~onecard.device_agents.personalities.pos_records`, because the agent and the simulator
run them and device agents may not import modules (ARCHITECTURE §2). This module re-exports
them under the canteen's names and adds what only the server needs (a local day's bounds, menu
totals). Nothing here reads a clock, a database or the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from onecard.device_agents.personalities.pos_records import (
    MAC_FIELDS,
    SALE_EVENT,
    mac_message,
    record_mac,
)
from onecard.device_agents.personalities.pos_rules import (
    FULL_RATE_BP,
    MAX_SALE_FEN,
    PROTOCOL_REASON,
    Allowance,
    CanteenReason,
    HolderRule,
    MealPeriod,
    Mode,
    Usage,
    Verdict,
    allowance_breach,
    decide_card_purse,
    decide_offline,
    decide_sale,
    discounted,
    local_day,
    local_moment,
    meal_period_at,
    needs_pin,
    period_day,
)

__all__ = [
    "FULL_RATE_BP",
    "MAC_FIELDS",
    "MAX_SALE_FEN",
    "PROTOCOL_REASON",
    "SALE_EVENT",
    "Allowance",
    "CanteenReason",
    "HolderRule",
    "MealPeriod",
    "Mode",
    "Usage",
    "Verdict",
    "allowance_breach",
    "day_bounds",
    "decide_card_purse",
    "decide_offline",
    "decide_sale",
    "discounted",
    "local_day",
    "local_moment",
    "mac_message",
    "meal_period_at",
    "menu_total",
    "needs_pin",
    "period_day",
    "record_mac",
]


def day_bounds(day: date, zone: str) -> tuple[datetime, datetime]:
    """``[start, end)`` of a local day as aware UTC-comparable instants."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return start, end


def menu_total(prices: Mapping[str, int], items: Iterable[tuple[str, int]]) -> int | None:
    """Sum of ``(item code, quantity)`` at ``prices``; ``None`` for an unknown item or bad qty."""
    total = 0
    for code, qty in items:
        if code not in prices or isinstance(qty, bool) or not isinstance(qty, int) or qty < 1:
            return None
        total += prices[code] * qty
    return total
