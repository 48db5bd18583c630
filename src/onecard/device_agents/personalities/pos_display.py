"""What a canteen POS shows and beeps: texts in Chinese and English, beep patterns, and the
screen for a decision (its own offline verdict, or the platform's ``down/tap`` answer). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from onecard.device_agents.personalities.pos_rules import CanteenReason
from onecard.device_agents.protocol.codes import ReasonCode


class Beep(Enum):
    """Beeper patterns as (tone Hz, on ms, off ms) steps."""

    OK = ((2700, 80, 0),)
    DENY = ((1200, 200, 80), (1200, 200, 0))
    PIN = ((2700, 60, 60), (2700, 60, 0))
    ERROR = ((800, 600, 0),)

    @property
    def code(self) -> str:
        """The pattern's name for a reader driver's ``beep`` (``ok``, ``deny``, ``pin``...)."""
        return self.name.lower()


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

    @property
    def text(self) -> str:
        """Both lines on one (a one-line display, a log line)."""
        return f"{self.line1} {self.line2}".strip()


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


def screen_for_decision(
    reason: ReasonCode,
    detail: str | None,
    display: str,
    balance_fen: int | None,
    *,
    lang: str = "zh",
    amount_fen: int = 0,
) -> Screen:
    """The display for the platform's decision (``down/tap``): the canteen text of ``detail``
    when it names one, else of the protocol reason; the platform's own ``display`` (error
    beep) for a reason canteen has no text for."""
    try:
        canteen = CanteenReason(detail or "")
    except ValueError:
        if reason not in PROTOCOL_TO_CANTEEN:
            return Screen(display or reason.value, "", Beep.ERROR)
        canteen = PROTOCOL_TO_CANTEEN[reason]
    return screen(canteen, lang=lang, amount_fen=amount_fen, balance_fen=balance_fen)


def screen_for_reply(
    reply: Mapping[str, object], *, lang: str = "zh", amount_fen: int = 0
) -> Screen:
    """:func:`screen_for_decision` of a ``down/tap`` reply as a JSON object."""
    try:
        code = ReasonCode(str(reply.get("reason", "INTERNAL_ERROR")))
    except ValueError:
        code = ReasonCode.INTERNAL_ERROR
    balance = reply.get("balance", reply.get("balance_fen"))
    return screen_for_decision(
        code,
        str(reply.get("detail") or ""),
        str(reply.get("display", "")),
        balance if isinstance(balance, int) and not isinstance(balance, bool) else None,
        lang=lang,
        amount_fen=amount_fen,
    )
