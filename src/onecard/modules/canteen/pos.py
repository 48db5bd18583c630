"""The POS terminal personality: what a canteen POS shows and beeps, and how it decides offline.

Used on the device side (agent, simulator), so it imports nothing from the platform: only the
pure rules of this module and the pure device protocol. The terminal keeps its own per-card
counters for the local business day; they feed :func:`onecard.modules.canteen.rules.decide_offline`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum

from onecard.device_agents.protocol.codes import ReasonCode
from onecard.modules.canteen import rules
from onecard.modules.canteen.rules import CanteenReason, Mode


class Beep(Enum):
    """Beeper patterns as (tone Hz, on ms, off ms) steps."""

    OK = ((2700, 80, 0),)
    DENY = ((1200, 200, 80), (1200, 200, 0))
    PIN = ((2700, 60, 60), (2700, 60, 0))
    ERROR = ((800, 600, 0),)


TEXTS: Mapping[str, Mapping[CanteenReason, str]] = {
    "zh": {
        CanteenReason.OK: "消费成功",
        CanteenReason.AMOUNT_INVALID: "金额无效",
        CanteenReason.OUTSIDE_MEAL_PERIOD: "非就餐时段",
        CanteenReason.MEAL_ALREADY_TAKEN: "本餐已消费",
        CanteenReason.PER_MEAL_LIMIT: "超出单餐限额",
        CanteenReason.PER_DAY_LIMIT: "超出当日限额",
        CanteenReason.PIN_REQUIRED: "请输入密码",
        CanteenReason.CARD_BLACKLISTED: "此卡已挂失或冻结",
        CanteenReason.OFFLINE_AMOUNT_EXCEEDED: "超出脱机限额",
        CanteenReason.OFFLINE_COUNT_EXCEEDED: "超出脱机次数",
        CanteenReason.OFFLINE_DISABLED: "脱机不可消费",
        CanteenReason.INSUFFICIENT_FUNDS: "余额不足",
        CanteenReason.NOTHING_TO_REFUND: "无可撤销交易",
    },
    "en": {
        CanteenReason.OK: "Paid",
        CanteenReason.AMOUNT_INVALID: "Invalid amount",
        CanteenReason.OUTSIDE_MEAL_PERIOD: "Not a meal time",
        CanteenReason.MEAL_ALREADY_TAKEN: "Meal already taken",
        CanteenReason.PER_MEAL_LIMIT: "Meal limit reached",
        CanteenReason.PER_DAY_LIMIT: "Daily limit reached",
        CanteenReason.PIN_REQUIRED: "Enter PIN",
        CanteenReason.CARD_BLACKLISTED: "Card lost or frozen",
        CanteenReason.OFFLINE_AMOUNT_EXCEEDED: "Offline limit reached",
        CanteenReason.OFFLINE_COUNT_EXCEEDED: "Offline count reached",
        CanteenReason.OFFLINE_DISABLED: "No offline sales",
        CanteenReason.INSUFFICIENT_FUNDS: "Insufficient funds",
        CanteenReason.NOTHING_TO_REFUND: "Nothing to refund",
    },
}

PROTOCOL_TO_CANTEEN: Mapping[ReasonCode, CanteenReason] = {
    ReasonCode.OK: CanteenReason.OK,
    ReasonCode.INSUFFICIENT_FUNDS: CanteenReason.INSUFFICIENT_FUNDS,
    ReasonCode.OUTSIDE_SCHEDULE: CanteenReason.OUTSIDE_MEAL_PERIOD,
    ReasonCode.LIMIT_REACHED: CanteenReason.PER_DAY_LIMIT,
    ReasonCode.CARD_LOST: CanteenReason.CARD_BLACKLISTED,
    ReasonCode.CARD_FROZEN: CanteenReason.CARD_BLACKLISTED,
    ReasonCode.CARD_EXPIRED: CanteenReason.CARD_BLACKLISTED,
    ReasonCode.CARD_RETURNED: CanteenReason.CARD_BLACKLISTED,
}


@dataclass(frozen=True)
class Screen:
    """What the POS shows and beeps after a decision."""

    line1: str
    line2: str
    beep: Beep


def yuan(fen: int) -> str:
    """``1250`` → ``"¥12.50"`` (integer arithmetic only)."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}¥{whole}.{cents:02d}"


def screen(
    reason: CanteenReason, *, lang: str = "zh", amount_fen: int = 0, balance_fen: int | None = None
) -> Screen:
    """The display and beep for a canteen reason (server detail or local offline verdict)."""
    text = TEXTS.get(lang, TEXTS["en"])[reason]
    if reason is CanteenReason.OK:
        tail = (
            f" {'余额' if lang == 'zh' else 'Bal'} {yuan(balance_fen)}"
            if balance_fen is not None
            else ""
        )
        return Screen(text, f"{yuan(amount_fen)}{tail}", Beep.OK)
    return Screen(
        text,
        yuan(amount_fen) if amount_fen else "",
        Beep.PIN if reason is CanteenReason.PIN_REQUIRED else Beep.DENY,
    )


def screen_for_reply(
    reply: Mapping[str, object], *, lang: str = "zh", amount_fen: int = 0
) -> Screen:
    """The display for a ``down/tap`` reply: the canteen detail when present, else the code."""
    detail = str(reply.get("detail", ""))
    try:
        reason = CanteenReason(detail)
    except ValueError:
        code = ReasonCode(str(reply.get("reason", "INTERNAL_ERROR")))
        if code not in PROTOCOL_TO_CANTEEN:
            return Screen(str(reply.get("display", code.value)), "", Beep.ERROR)
        reason = PROTOCOL_TO_CANTEEN[code]
    balance = reply.get("balance_fen")
    return screen(
        reason,
        lang=lang,
        amount_fen=amount_fen,
        balance_fen=balance if isinstance(balance, int) else None,
    )


@dataclass
class OfflineBook:
    """The POS's per-card counters for one local business day (reset when the day changes)."""

    day: date | None = None
    spent: dict[str, rules.Usage] = field(default_factory=dict)

    def usage(self, card_no: str, day: date) -> rules.Usage:
        """What this POS saw the card spend on ``day``."""
        if day != self.day:
            self.day, self.spent = day, {}
        return self.spent.get(card_no, rules.Usage())

    def add(self, card_no: str, period: str | None, amount_fen: int, *, same_period: bool) -> None:
        """Count an offline sale."""
        u = self.spent.get(card_no, rules.Usage())
        self.spent[card_no] = rules.Usage(
            period_count=(u.period_count if same_period else 0) + 1,
            period_fen=(u.period_fen if same_period else 0) + amount_fen,
            day_count=u.day_count + 1,
            day_fen=u.day_fen + amount_fen,
        )


@dataclass
class OfflinePos:
    """A POS deciding without the network: blacklist, rules, allowance, then a MACed record."""

    device_id: str
    device_key: bytes
    zone: str
    periods: tuple[rules.MealPeriod, ...]
    mode: Mode
    fixed_prices: Mapping[str, int]
    epoch: int = 1
    lang: str = "zh"
    blacklist: set[str] = field(default_factory=set)
    book: OfflineBook = field(default_factory=OfflineBook)
    last_period: dict[str, str | None] = field(default_factory=dict)
    seq: int = 0

    def sell(
        self,
        card_no: str,
        now: datetime,
        rule: rules.HolderRule,
        allowance: rules.Allowance | None,
        *,
        list_fen: int | None = None,
        pin_verified: bool = False,
    ) -> tuple[rules.Verdict, dict[str, object] | None, Screen]:
        """Decide a sale; when allowed, return the record to upload (with its MAC)."""
        period = rules.meal_period_at(self.periods, now, self.zone)
        day = (
            rules.period_day(period, now, self.zone) if period else rules.local_day(now, self.zone)
        )
        usage = self.book.usage(card_no, day)
        same = period is not None and self.last_period.get(card_no) == period.key
        if not same:
            usage = rules.Usage(0, 0, usage.day_count, usage.day_fen)
        price = self._price(period, list_fen)
        verdict = rules.decide_offline(
            rule,
            usage,
            allowance,
            blacklisted=card_no in self.blacklist,
            mode=self.mode,
            list_fen=price,
            period=period,
            pin_verified=pin_verified,
        )
        shown = screen(verdict.reason, lang=self.lang, amount_fen=verdict.amount_fen)
        if not verdict.allow:
            return verdict, None, shown
        self.book.add(card_no, verdict.period, verdict.amount_fen, same_period=same)
        self.last_period[card_no] = verdict.period
        return verdict, self._record(card_no, verdict, now), shown

    def _price(self, period: rules.MealPeriod | None, list_fen: int | None) -> int | None:
        if self.mode is Mode.FIXED:
            return self.fixed_prices.get(period.key) if period else None
        return list_fen

    def _record(self, card_no: str, verdict: rules.Verdict, now: datetime) -> dict[str, object]:
        self.seq += 1
        fields: dict[str, object] = {
            "device_id": self.device_id,
            "epoch": self.epoch,
            "seq": self.seq,
            "card_no": card_no,
            "amount_fen": verdict.amount_fen,
            "list_fen": verdict.list_fen,
            "device_time": now.isoformat(),
        }
        return {
            **fields,
            "type": "canteen.sale",
            "period": verdict.period,
            "mac": rules.record_mac(self.device_key, fields),
        }

    def apply_blacklist(self, add: Iterable[str], remove: Iterable[str]) -> None:
        """Apply a blacklist delta from ``down/lists``."""
        self.blacklist |= set(add)
        self.blacklist -= set(remove)
