"""Offline decisions: what a terminal decides when the platform cannot answer in time.

A rule is a pure function ``(OfflineContext) -> OfflineDecision``; modules may provide their
own (ARCHITECTURE §2: the same rule runs on the terminal and on the server). The default denies
blacklisted credentials and allows others within an offline allowance from the config bundle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from onecard.device_agents.protocol.codes import ReasonCode


@dataclass(frozen=True, slots=True)
class OfflinePolicy:
    """Allowance from the config bundle's ``offline`` object (amounts in fen)."""

    max_amount: int = 5000
    max_per_card_day: int = 20000
    deny_when_clock_invalid: bool = False

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> OfflinePolicy:
        """Read ``body["offline"]``; missing or ill-typed values keep their defaults."""
        raw = body.get("offline")
        if not isinstance(raw, Mapping):
            return cls()
        fields = {
            k: raw[k]
            for k in ("max_amount", "max_per_card_day", "deny_when_clock_invalid")
            if k in raw and isinstance(raw[k], int)
        }
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class OfflineContext:
    """What the terminal knows when it decides alone."""

    key: int
    blacklisted: bool
    amount: int | None
    spent_today: int
    clock_valid: bool
    policy: OfflinePolicy = field(default_factory=OfflinePolicy)


@dataclass(frozen=True, slots=True)
class OfflineDecision:
    """The terminal's own decision; flags go onto the stored record."""

    allow: bool
    reason: ReasonCode
    flags: tuple[str, ...] = ()


OfflineRule = Callable[[OfflineContext], OfflineDecision]


def default_rule(ctx: OfflineContext) -> OfflineDecision:
    """Deny a blacklisted card; allow others within the allowance (per tap, per card per day)."""
    flags = ("offline",) if ctx.clock_valid else ("offline", "time_untrusted")
    if ctx.blacklisted:
        return OfflineDecision(False, ReasonCode.CARD_LOST, flags)
    if not ctx.clock_valid and ctx.policy.deny_when_clock_invalid:
        return OfflineDecision(False, ReasonCode.CLOCK_INVALID, flags)
    if ctx.amount is not None:
        if ctx.amount > ctx.policy.max_amount:
            return OfflineDecision(False, ReasonCode.LIMIT_REACHED, flags)
        if ctx.spent_today + ctx.amount > ctx.policy.max_per_card_day:
            return OfflineDecision(False, ReasonCode.LIMIT_REACHED, flags)
    return OfflineDecision(True, ReasonCode.OK, flags)
