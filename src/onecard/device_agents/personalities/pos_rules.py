"""Canteen sale rules, pure: a POS deciding alone and the canteen's server run the same code.

Nothing here reads a clock, a database or the network, and nothing imports the platform or the
modules: the caller passes the instant, the site's IANA zone, the holder's rule and what was
already spent. The rules live on the device side because device agents may not import modules
(ARCHITECTURE §2); the canteen module re-exports them as ``onecard.modules.canteen.rules``.
Money is integer fen; rates are basis points (10000 = full price, 9000 = 9折, 10 % off).

Evaluation order of :func:`decide_sale` (the first failing check gives the reason):
meal period → amount → one swipe per period (fixed mode) → per-meal limit → per-day limit → PIN.
:func:`decide_offline` puts the POS's blacklist first and its offline allowance last.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from onecard.device_agents.protocol.codes import ReasonCode

FULL_RATE_BP = 10_000
MAX_SALE_FEN = 1_000_000  # 10,000 CNY: no canteen sale is larger


class Mode(StrEnum):
    """How a POS prices a sale."""

    FIXED = "fixed"  # one price per meal period, one swipe per period
    FREE = "free"  # the cashier keys the amount in
    MENU = "menu"  # priced dishes


class CanteenReason(StrEnum):
    """Canteen's own closed vocabulary; travels as ``detail`` beside the protocol reason."""

    OK = "ok"
    AMOUNT_INVALID = "amount_invalid"
    OUTSIDE_MEAL_PERIOD = "outside_meal_period"
    MEAL_ALREADY_TAKEN = "meal_already_taken"
    PER_MEAL_LIMIT = "per_meal_limit"
    PER_DAY_LIMIT = "per_day_limit"
    PIN_REQUIRED = "pin_required"
    CARD_BLACKLISTED = "card_blacklisted"
    OFFLINE_AMOUNT_EXCEEDED = "offline_amount_exceeded"
    OFFLINE_COUNT_EXCEEDED = "offline_count_exceeded"
    OFFLINE_DISABLED = "offline_disabled"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    NOTHING_TO_REFUND = "nothing_to_refund"


PROTOCOL_REASON: Mapping[CanteenReason, ReasonCode] = {
    CanteenReason.OK: ReasonCode.OK,
    CanteenReason.AMOUNT_INVALID: ReasonCode.NOT_PERMITTED,
    CanteenReason.OUTSIDE_MEAL_PERIOD: ReasonCode.OUTSIDE_SCHEDULE,
    CanteenReason.MEAL_ALREADY_TAKEN: ReasonCode.LIMIT_REACHED,
    CanteenReason.PER_MEAL_LIMIT: ReasonCode.LIMIT_REACHED,
    CanteenReason.PER_DAY_LIMIT: ReasonCode.LIMIT_REACHED,
    CanteenReason.PIN_REQUIRED: ReasonCode.NOT_PERMITTED,
    CanteenReason.CARD_BLACKLISTED: ReasonCode.CARD_FROZEN,
    CanteenReason.OFFLINE_AMOUNT_EXCEEDED: ReasonCode.OFFLINE_NOT_ALLOWED,
    CanteenReason.OFFLINE_COUNT_EXCEEDED: ReasonCode.OFFLINE_NOT_ALLOWED,
    CanteenReason.OFFLINE_DISABLED: ReasonCode.OFFLINE_NOT_ALLOWED,
    CanteenReason.INSUFFICIENT_FUNDS: ReasonCode.INSUFFICIENT_FUNDS,
    CanteenReason.NOTHING_TO_REFUND: ReasonCode.NOT_PERMITTED,
}


@dataclass(frozen=True)
class MealPeriod:
    """A meal period of a site: local wall-clock ``[starts, ends)``; ``ends`` may pass midnight."""

    key: str
    starts: time
    ends: time

    def covers(self, local: time) -> bool:
        """True when the local wall time lies inside the period."""
        if self.starts <= self.ends:
            return self.starts <= local < self.ends
        return local >= self.starts or local < self.ends  # e.g. supper 21:00-01:00


@dataclass(frozen=True)
class HolderRule:
    """What applies to one identity class (``None``: no limit / no PIN)."""

    rate_bp: int = FULL_RATE_BP
    per_meal_limit_fen: int | None = None
    per_day_limit_fen: int | None = None
    meals_per_period: int = 1  # fixed mode only
    pin_threshold_fen: int | None = None  # a PIN is needed when the amount is above this


@dataclass(frozen=True)
class Usage:
    """What the holder already spent: in this meal period today, and today in total."""

    period_count: int = 0
    period_fen: int = 0
    day_count: int = 0
    day_fen: int = 0


@dataclass(frozen=True)
class Allowance:
    """How much a card may spend offline per local day, in amount and in number of sales."""

    amount_fen: int
    count: int


@dataclass(frozen=True)
class Verdict:
    """The decision on a sale. ``amount_fen`` is what the card pays (after the discount)."""

    allow: bool
    reason: CanteenReason
    list_fen: int = 0
    discount_fen: int = 0
    amount_fen: int = 0
    period: str | None = None

    @property
    def code(self) -> ReasonCode:
        """The protocol reason a terminal acts on."""
        return PROTOCOL_REASON[self.reason]


def local_moment(instant: datetime, zone: str) -> datetime:
    """``instant`` (aware) as wall time in the IANA ``zone``."""
    if instant.tzinfo is None:
        raise ValueError("instants must be aware")
    return instant.astimezone(ZoneInfo(zone))


def local_day(instant: datetime, zone: str) -> date:
    """The business day of ``instant`` at a site (local midnight boundaries, X-R2e)."""
    return local_moment(instant, zone).date()


def meal_period_at(
    periods: Iterable[MealPeriod], instant: datetime, zone: str
) -> MealPeriod | None:
    """The meal period covering ``instant`` at a site in ``zone`` (first match), else ``None``."""
    wall = local_moment(instant, zone).time().replace(tzinfo=None)
    return next((p for p in periods if p.covers(wall)), None)


def period_day(period: MealPeriod, instant: datetime, zone: str) -> date:
    """The business day a meal belongs to: a period past midnight counts for the day it began."""
    local = local_moment(instant, zone)
    if period.starts > period.ends and local.time() < period.ends:
        return local.date() - timedelta(days=1)
    return local.date()


def discounted(list_fen: int, rate_bp: int) -> int:
    """Price after an identity discount, rounded half up to the fen."""
    return (list_fen * rate_bp + FULL_RATE_BP // 2) // FULL_RATE_BP


def decide_sale(
    rule: HolderRule,
    usage: Usage,
    *,
    mode: Mode,
    list_fen: int | None,
    period: MealPeriod | None,
    pin_verified: bool,
) -> Verdict:
    """Decide a sale of ``list_fen`` (the price before discount) for a holder under ``rule``."""
    if period is None:
        return Verdict(False, CanteenReason.OUTSIDE_MEAL_PERIOD)
    if list_fen is None or isinstance(list_fen, bool) or not 0 < list_fen <= MAX_SALE_FEN:
        return Verdict(False, CanteenReason.AMOUNT_INVALID, period=period.key)
    pay = discounted(list_fen, rule.rate_bp)
    key = period.key

    def deny(reason: CanteenReason) -> Verdict:
        return Verdict(False, reason, list_fen, list_fen - pay, pay, key)

    if mode is Mode.FIXED and usage.period_count >= rule.meals_per_period:
        return deny(CanteenReason.MEAL_ALREADY_TAKEN)
    if _over(rule.per_meal_limit_fen, usage.period_fen + pay):
        return deny(CanteenReason.PER_MEAL_LIMIT)
    if _over(rule.per_day_limit_fen, usage.day_fen + pay):
        return deny(CanteenReason.PER_DAY_LIMIT)
    if needs_pin(rule, pay) and not pin_verified:
        return deny(CanteenReason.PIN_REQUIRED)
    return Verdict(True, CanteenReason.OK, list_fen, list_fen - pay, pay, key)


def needs_pin(rule: HolderRule, amount_fen: int) -> bool:
    """True when ``amount_fen`` is above the holder's PIN threshold."""
    return rule.pin_threshold_fen is not None and amount_fen > rule.pin_threshold_fen


def _over(limit: int | None, total: int) -> bool:
    return limit is not None and total > limit


def decide_offline(
    rule: HolderRule,
    usage: Usage,
    allowance: Allowance | None,
    *,
    blacklisted: bool,
    mode: Mode,
    list_fen: int | None,
    period: MealPeriod | None,
    pin_verified: bool,
) -> Verdict:
    """What a POS without the network decides: its blacklist, the sale rules on its own
    counters (``usage`` as this POS saw it), then the card's daily offline allowance."""
    if blacklisted:
        return Verdict(False, CanteenReason.CARD_BLACKLISTED)
    verdict = decide_sale(
        rule, usage, mode=mode, list_fen=list_fen, period=period, pin_verified=pin_verified
    )
    if not verdict.allow:
        return verdict
    breach = allowance_breach(allowance, usage.day_count + 1, usage.day_fen + verdict.amount_fen)
    if breach is not None:
        return Verdict(False, breach, verdict.list_fen, verdict.discount_fen, verdict.amount_fen)
    return verdict


def allowance_breach(
    allowance: Allowance | None, count: int, total_fen: int
) -> CanteenReason | None:
    """Which part of the offline allowance ``count`` sales totalling ``total_fen`` break."""
    if allowance is None:
        return CanteenReason.OFFLINE_DISABLED
    if count > allowance.count:
        return CanteenReason.OFFLINE_COUNT_EXCEEDED
    if total_fen > allowance.amount_fen:
        return CanteenReason.OFFLINE_AMOUNT_EXCEEDED
    return None


def decide_card_purse(
    rule: HolderRule,
    usage: Usage,
    *,
    blacklisted: bool,
    mode: Mode,
    list_fen: int | None,
    period: MealPeriod | None,
    pin_verified: bool,
) -> Verdict:
    """What a POS without the network decides when the CPU card's own purse pays: its
    blacklist, then the sale rules. No offline allowance: the card cannot spend more than it
    holds, and the clearing record's TAC proves what it paid."""
    if blacklisted:
        return Verdict(False, CanteenReason.CARD_BLACKLISTED)
    return decide_sale(
        rule, usage, mode=mode, list_fen=list_fen, period=period, pin_verified=pin_verified
    )
