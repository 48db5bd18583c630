"""The POS's own counters and its decision alone, pure: what one POS saw a card spend."""

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from onecard.device_agents.personalities.pos import OfflineBook, PosSetup, decide, situation
from onecard.device_agents.personalities.pos_rules import (
    Allowance,
    CanteenReason,
    HolderRule,
    MealPeriod,
    Mode,
)

ZONE = "Asia/Shanghai"
SETUP = PosSetup(
    zone=ZONE,
    periods=(MealPeriod("lunch", time(11), time(13, 30)), MealPeriod("supper", time(21), time(1))),
    mode=Mode.FREE,
    allowance=Allowance(amount_fen=2000, count=2),
)


def at(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 9, day, hh, mm, tzinfo=ZoneInfo(ZONE)).astimezone(UTC)


def sell(book: OfflineBook, when: datetime, fen: int, card: str = "C1"):
    where = situation(SETUP, book, card, when)
    verdict = decide(SETUP, where, HolderRule(), SETUP.allowance, blacklisted=False, list_fen=fen)
    if verdict.allow:
        book.add(card, verdict, where.day)
    return verdict


def test_a_new_business_day_starts_the_counters_afresh():
    book = OfflineBook()
    sell(book, at(1, 12), 1500)

    over = sell(book, at(1, 12, 30), 1000)
    next_day = sell(book, at(2, 12), 1500)

    assert over.reason is CanteenReason.OFFLINE_AMOUNT_EXCEEDED
    assert next_day.allow
    assert book.day == date(2026, 9, 2)


def test_a_supper_after_midnight_counts_for_the_day_it_began():
    book = OfflineBook()
    sell(book, at(1, 22), 1500)

    after_midnight = sell(book, at(2, 0, 30), 1000)

    assert after_midnight.reason is CanteenReason.OFFLINE_AMOUNT_EXCEEDED


def test_the_counters_survive_their_json_and_garbage_is_an_empty_book():
    book = OfflineBook()
    sell(book, at(1, 12), 1500)

    assert OfflineBook.from_json(book.to_json()) == book
    assert OfflineBook.from_json("") == OfflineBook()
    assert OfflineBook.from_json('{"day": "2026-09-01", "spent": {"C1": [1]}}') == OfflineBook()


def test_without_an_allowance_the_pos_refuses_before_any_rule_but_the_blacklist():
    where = situation(SETUP, OfflineBook(), "C1", at(1, 3))  # no meal period at 03:00

    refused = decide(SETUP, where, HolderRule(), None, blacklisted=False, list_fen=1000)
    lost = decide(SETUP, where, HolderRule(), None, blacklisted=True, list_fen=1000)

    assert (refused.reason, lost.reason) == (
        CanteenReason.OFFLINE_DISABLED,
        CanteenReason.CARD_BLACKLISTED,
    )
