"""The canteen POS personality: how a POS decides offline, on counters of its own.

Pure (the agent runtime does the I/O, ``onecard.device_agents.runtime.pos_terminal``): the
POS's per-card counters for the local business day (:class:`OfflineBook`) and the offline
decision on them (:func:`situation`, then :func:`decide` with the shared rules of
:mod:`~onecard.device_agents.personalities.pos_rules`). What the POS shows and beeps is
:mod:`~onecard.device_agents.personalities.pos_display` (re-exported here), its configuration
:mod:`~onecard.device_agents.personalities.pos_setup`, its records and key
:mod:`~onecard.device_agents.personalities.pos_records`. :class:`OfflinePos` puts it all
together with a record numbering of its own, as the canteen's tests and tools use it; the
canteen module re-exports this module as ``onecard.modules.canteen.pos``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from onecard.device_agents.personalities import pos_rules as rules
from onecard.device_agents.personalities.pos_display import (
    PROTOCOL_TO_CANTEEN,
    TEXTS,
    Beep,
    Screen,
    screen,
    screen_for_decision,
    screen_for_reply,
    yuan,
)
from onecard.device_agents.personalities.pos_records import PosKey, sale_fields, sealed
from onecard.device_agents.personalities.pos_rules import CanteenReason, Mode
from onecard.device_agents.personalities.pos_setup import PosSetup
from onecard.keys.algorithms import Algorithm

UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- the POS's own counters -----------------------------------------------------------------


@dataclass
class OfflineBook:
    """The POS's per-card counters for one local business day (reset when the day changes),
    and the meal period of each card's last sale here."""

    day: date | None = None
    spent: dict[str, rules.Usage] = field(default_factory=dict)
    last_period: dict[str, str | None] = field(default_factory=dict)

    def usage(self, card_no: str, period_key: str | None, day: date) -> rules.Usage:
        """What this POS saw the card spend on ``day``; the period counters only when its last
        sale here was in the period ``period_key``."""
        if day != self.day:
            return rules.Usage()
        seen = self.spent.get(card_no, rules.Usage())
        if period_key is None or self.last_period.get(card_no) != period_key:
            return rules.Usage(0, 0, seen.day_count, seen.day_fen)
        return seen

    def add(self, card_no: str, verdict: rules.Verdict, day: date) -> None:
        """Count an allowed sale of ``day`` (a new day starts the counters afresh)."""
        seen = self.usage(card_no, verdict.period, day)
        if day != self.day:
            self.day, self.spent, self.last_period = day, {}, {}
        self.spent[card_no] = rules.Usage(
            period_count=seen.period_count + 1,
            period_fen=seen.period_fen + verdict.amount_fen,
            day_count=seen.day_count + 1,
            day_fen=seen.day_fen + verdict.amount_fen,
        )
        self.last_period[card_no] = verdict.period

    def copy(self) -> OfflineBook:
        """An independent copy (to count a sale only once its record is stored)."""
        return OfflineBook(self.day, dict(self.spent), dict(self.last_period))

    def to_json(self) -> str:
        """The counters as JSON text (what the agent keeps in its store)."""
        spent = {
            card: [u.period_count, u.period_fen, u.day_count, u.day_fen]
            for card, u in self.spent.items()
        }
        day = self.day.isoformat() if self.day else None
        return json.dumps({"day": day, "spent": spent, "last": self.last_period})

    @classmethod
    def from_json(cls, text: str) -> OfflineBook:
        """The inverse of :meth:`to_json`; an empty book for anything else (a fresh store)."""
        try:
            raw = json.loads(text)
            return cls(
                date.fromisoformat(raw["day"]) if raw["day"] else None,
                {str(c): rules.Usage(*map(int, u)) for c, u in raw["spent"].items()},
                {str(c): p if isinstance(p, str) else None for c, p in raw["last"].items()},
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return cls()


# --- deciding alone -------------------------------------------------------------------------


@dataclass(frozen=True)
class Situation:
    """Where a sale at an instant falls for a card, as this POS saw it."""

    period: rules.MealPeriod | None
    day: date
    usage: rules.Usage


def situation(setup: PosSetup, book: OfflineBook, card_no: str, now: datetime) -> Situation:
    """The meal period at ``now``, its business day, and the card's usage on this POS."""
    period = rules.meal_period_at(setup.periods, now, setup.zone)
    day = rules.period_day(period, now, setup.zone) if period else rules.local_day(now, setup.zone)
    return Situation(period, day, book.usage(card_no, period.key if period else None, day))


def decide(
    setup: PosSetup,
    where: Situation,
    rule: rules.HolderRule,
    allowance: rules.Allowance | None,
    *,
    blacklisted: bool,
    list_fen: int | None,
    pin_verified: bool = False,
) -> rules.Verdict:
    """A sale charged to the holder's platform purses, decided alone: the blacklist first, then
    ``OFFLINE_DISABLED`` at once when the POS has no allowance, then
    :func:`~onecard.device_agents.personalities.pos_rules.decide_offline`."""
    if allowance is None and not blacklisted:
        return rules.Verdict(False, CanteenReason.OFFLINE_DISABLED)
    return rules.decide_offline(
        rule,
        where.usage,
        allowance,
        blacklisted=blacklisted,
        mode=setup.mode,
        list_fen=setup.price(where.period, list_fen),
        period=where.period,
        pin_verified=pin_verified,
    )


def device_instant(ms: int) -> datetime:
    """Milliseconds since the Unix epoch as an aware UTC instant (integer arithmetic)."""
    return UNIX_EPOCH + timedelta(milliseconds=ms)


def device_millis(instant: datetime) -> int:
    """An aware instant as milliseconds since the Unix epoch."""
    return (instant - UNIX_EPOCH) // timedelta(milliseconds=1)


# --- a POS with a store of its own ------------------------------------------------------------


Sold = tuple[rules.Verdict, dict[str, object] | None, Screen]
"""A decision, the record to upload when it allowed the sale, and what the POS shows."""


@dataclass
class OfflinePos:
    """A POS deciding without the network: blacklist, rules, allowance, then a record to upload.

    ``device_key`` is the POS's record MAC key as provisioning unwrapped it (``key_algorithm``
    and ``key_version`` come with it); ``epoch`` names the POS's record store (PROTOCOL) and
    ``seq`` is the last record's number in it. Its instants are both the decision's time and
    the record's ``device_time`` (the agent keeps them apart).
    """

    device_id: str
    device_key: bytes = field(repr=False)
    zone: str
    periods: tuple[rules.MealPeriod, ...]
    mode: Mode
    fixed_prices: Mapping[str, int]
    epoch: str = "ep-0001"
    key_algorithm: Algorithm = Algorithm.SM4
    key_version: int = 1
    lang: str = "zh"
    blacklist: set[str] = field(default_factory=set)
    book: OfflineBook = field(default_factory=OfflineBook)
    seq: int = 0

    @property
    def setup(self) -> PosSetup:
        """This POS's configuration (its allowance is given per sale)."""
        return PosSetup(self.zone, self.periods, self.mode, self.fixed_prices, self.lang)

    @property
    def key(self) -> PosKey:
        """The POS's record MAC key."""
        return PosKey(self.key_algorithm, self.key_version, self.device_key)

    def sell(
        self,
        card_no: str,
        now: datetime,
        rule: rules.HolderRule,
        allowance: rules.Allowance | None,
        *,
        list_fen: int | None = None,
        pin_verified: bool = False,
    ) -> Sold:
        """Decide a sale charged to the holder's platform purses; when allowed, return the
        MACed record to upload."""
        where = situation(self.setup, self.book, card_no, now)
        verdict = decide(self.setup, where, rule, allowance, blacklisted=card_no in self.blacklist,
                         list_fen=list_fen, pin_verified=pin_verified)  # fmt: skip
        shown = screen(verdict.reason, lang=self.lang, amount_fen=verdict.amount_fen)
        if not verdict.allow:
            return verdict, None, shown
        self.book.add(card_no, verdict, where.day)
        return verdict, self._record(card_no, verdict, now), shown

    def sell_from_card(
        self,
        card_no: str,
        now: datetime,
        rule: rules.HolderRule,
        *,
        pay: Callable[[int], bytes],
        list_fen: int | None = None,
        pin_verified: bool = False,
    ) -> Sold:
        """Decide a sale paid from the CPU card's own purse; when allowed, ``pay(amount_fen)``
        runs the PSAM purchase on the card and returns its 80-byte clearing record, which the
        uploaded record carries (the card's TAC vouches for it, not the POS's MAC)."""
        where = situation(self.setup, self.book, card_no, now)
        verdict = rules.decide_card_purse(
            rule,
            where.usage,
            blacklisted=card_no in self.blacklist,
            mode=self.mode,
            list_fen=self.setup.price(where.period, list_fen),
            period=where.period,
            pin_verified=pin_verified,
        )
        shown = screen(verdict.reason, lang=self.lang, amount_fen=verdict.amount_fen)
        if not verdict.allow:
            return verdict, None, shown
        clearing = pay(verdict.amount_fen)
        self.book.add(card_no, verdict, where.day)
        return verdict, self._record(card_no, verdict, now, clearing=clearing), shown

    def _record(
        self, card_no: str, verdict: rules.Verdict, now: datetime, *, clearing: bytes | None = None
    ) -> dict[str, object]:
        """The ``up/records`` record of a sale (protocol ``Record``, event ``canteen_sale``)."""
        self.seq += 1
        fields = sale_fields(
            verdict,
            credential={"kind": "card_no", "value": card_no},
            device_time=device_millis(now),
        )
        if clearing is not None:
            fields["clearing"] = clearing.hex().upper()
        else:
            fields = sealed(fields, self.key, device_id=self.device_id, epoch=self.epoch,
                            seq=self.seq)  # fmt: skip
        return {"epoch": self.epoch, "seq": self.seq, **fields}

    def apply_blacklist(self, add: Iterable[str], remove: Iterable[str]) -> None:
        """Apply a blacklist delta from ``down/lists``."""
        self.blacklist |= set(add)
        self.blacklist -= set(remove)


__all__ = [
    "PROTOCOL_TO_CANTEEN",
    "TEXTS",
    "UNIX_EPOCH",
    "Beep",
    "OfflineBook",
    "OfflinePos",
    "PosSetup",
    "Screen",
    "Situation",
    "Sold",
    "decide",
    "device_instant",
    "device_millis",
    "screen",
    "screen_for_decision",
    "screen_for_reply",
    "situation",
    "yuan",
]
