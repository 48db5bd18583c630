"""What a canteen POS needs to decide alone, read from its signed configuration bundle.

The bundle body is ``{"device_id", "kind", "settings": {...}}`` (the kind's defaults overlaid
with the device's settings). A POS reads these settings; unknown ones are ignored and a
malformed one falls back to its default, except that anything wrong with the zone, the meal
periods or the offline allowance switches offline sales off (a POS never guesses a limit)::

    "settings": {
      "mode": "free",                        # fixed | free | menu
      "lang": "zh",                          # display language: zh | en
      "zone": "Asia/Shanghai",               # the site's IANA zone
      "meal_periods": [{"key": "lunch", "starts": "11:00", "ends": "13:30"}],
      "fixed_prices": {"lunch": 1200},       # fen, fixed mode
      "offline": {"enabled": true, "amount_fen": 1500, "count": 2,
                  "rule": {"per_meal_limit_fen": 5000, "pin_threshold_fen": 3000}}
    }

``offline.amount_fen`` and ``offline.count`` are the card's daily offline allowance on this
POS; ``offline.rule`` the holder rule it applies (a POS offline does not know the holder's
identity class, so the operator gives it the strictest one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from onecard.device_agents.personalities.pos_rules import (
    Allowance,
    HolderRule,
    MealPeriod,
    Mode,
)

RULE_FIELDS = (
    "rate_bp", "per_meal_limit_fen", "per_day_limit_fen", "meals_per_period", "pin_threshold_fen",
)  # fmt: skip


@dataclass(frozen=True)
class PosSetup:
    """A POS's configuration for deciding alone. ``allowance`` ``None``: no offline sales."""

    zone: str = "UTC"
    periods: tuple[MealPeriod, ...] = ()
    mode: Mode = Mode.FREE
    fixed_prices: Mapping[str, int] = field(default_factory=dict)
    lang: str = "zh"
    rule: HolderRule = field(default_factory=HolderRule)
    allowance: Allowance | None = None

    def price(self, period: MealPeriod | None, list_fen: int | None) -> int | None:
        """The list price of a sale: the period's fixed price, else what the cashier keyed."""
        if self.mode is Mode.FIXED:
            return self.fixed_prices.get(period.key) if period else None
        return list_fen

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PosSetup:
        """The setup of a verified bundle body (see the module docstring)."""
        raw = body.get("settings")
        settings: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        offline = _mapping(settings.get("offline"))
        zone, periods = _zone(settings.get("zone")), _periods(settings.get("meal_periods"))
        usable = zone is not None and periods is not None
        return cls(
            zone=zone or cls.zone,
            periods=periods or (),
            mode=_mode(settings.get("mode")),
            fixed_prices=_prices(settings.get("fixed_prices")),
            lang=_lang(settings.get("lang")),
            rule=_rule(_mapping(offline.get("rule"))),
            allowance=_allowance(offline) if usable else None,
        )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _fen(value: object) -> int | None:
    """A non-negative whole number (never a bool), else ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _zone(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return value


def _periods(value: object) -> tuple[MealPeriod, ...] | None:
    """The meal periods, or ``None`` when the list or any period in it is malformed."""
    if not isinstance(value, list):
        return None
    periods = []
    for item in value:
        entry = _mapping(item)
        try:
            key = entry["key"]
            starts, ends = time.fromisoformat(entry["starts"]), time.fromisoformat(entry["ends"])
        except (KeyError, TypeError, ValueError):
            return None
        if not isinstance(key, str) or not key:
            return None
        periods.append(MealPeriod(key, starts, ends))
    return tuple(periods)


def _lang(value: object) -> str:
    return value if isinstance(value, str) and value in ("zh", "en") else "zh"


def _mode(value: object) -> Mode:
    try:
        return Mode(str(value))
    except ValueError:
        return Mode.FREE


def _prices(value: object) -> dict[str, int]:
    return {
        str(k): fen for k, v in _mapping(value).items() if (fen := _fen(v)) is not None and fen > 0
    }


def _rule(raw: Mapping[str, Any]) -> HolderRule:
    """The holder rule of ``offline.rule``; ill-typed fields keep their defaults."""
    known = {k: fen for k in RULE_FIELDS if k in raw and (fen := _fen(raw[k])) is not None}
    return HolderRule(**known)


def _allowance(offline: Mapping[str, Any]) -> Allowance | None:
    """The daily offline allowance, or ``None`` when offline sales are off or ill-defined."""
    amount, count = _fen(offline.get("amount_fen")), _fen(offline.get("count"))
    if offline.get("enabled") is not True or amount is None or count is None:
        return None
    return Allowance(amount, count)
