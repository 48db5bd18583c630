"""The pure rules both the server and the POS run (no database)."""

from datetime import UTC, date, datetime, time

from onecard.keys.algorithms import Algorithm
from onecard.modules.canteen import rules
from onecard.modules.canteen.rules import CanteenReason, HolderRule, MealPeriod, Mode, Usage

LUNCH = MealPeriod("lunch", time(11, 0), time(13, 30))
SUPPER = MealPeriod("supper", time(21, 0), time(1, 0))


def test_meal_period_is_found_in_the_sites_zone_not_in_utc():
    noon_in_shanghai = datetime(2026, 9, 1, 4, 0, tzinfo=UTC)

    assert rules.meal_period_at([LUNCH], noon_in_shanghai, "Asia/Shanghai") == LUNCH
    assert rules.meal_period_at([LUNCH], noon_in_shanghai, "UTC") is None


def test_meal_period_end_is_excluded():
    at_1330 = datetime(2026, 9, 1, 5, 30, tzinfo=UTC)

    assert rules.meal_period_at([LUNCH], at_1330, "Asia/Shanghai") is None


def test_supper_after_midnight_belongs_to_the_day_it_began():
    half_past_midnight = datetime(2026, 9, 1, 16, 30, tzinfo=UTC)  # 00:30 on 2 Sep in Shanghai

    assert rules.meal_period_at([SUPPER], half_past_midnight, "Asia/Shanghai") == SUPPER
    assert rules.period_day(SUPPER, half_past_midnight, "Asia/Shanghai") == date(2026, 9, 1)


def test_discount_of_ten_percent_rounds_half_up_to_the_fen():
    assert rules.discounted(1200, 9000) == 1080
    assert rules.discounted(1255, 9000) == 1130  # 1129.5 -> 1130


def test_first_failing_check_gives_the_reason():
    rule = HolderRule(per_day_limit_fen=1000, pin_threshold_fen=500)

    verdict = rules.decide_sale(
        rule, Usage(day_fen=900), mode=Mode.FREE, list_fen=800, period=LUNCH, pin_verified=False
    )

    assert verdict.reason is CanteenReason.PER_DAY_LIMIT
    assert verdict.code == "LIMIT_REACHED"


def test_offline_allowance_counts_sales_and_amount():
    allowance = rules.Allowance(amount_fen=3000, count=2)

    assert rules.allowance_breach(allowance, 2, 3000) is None
    assert rules.allowance_breach(allowance, 3, 1500) is CanteenReason.OFFLINE_COUNT_EXCEEDED
    assert rules.allowance_breach(allowance, 2, 3001) is CanteenReason.OFFLINE_AMOUNT_EXCEEDED
    assert rules.allowance_breach(None, 1, 1) is CanteenReason.OFFLINE_DISABLED


def test_record_mac_covers_every_signed_field():
    fields = {"device_id": "pos-1", "epoch": "ep-0001", "seq": 7, "card_no": "C1",
              "amount_fen": 1200, "list_fen": 1200, "device_time": 1_788_220_800_000,
              "period": "lunch"}  # fmt: skip
    mac = rules.record_mac(Algorithm.SM4, b"k" * 16, fields)

    assert len(bytes.fromhex(mac)) == 4
    assert mac == rules.record_mac(Algorithm.SM4, b"k" * 16, dict(fields))
    for name, other in (("amount_fen", 120), ("seq", 8), ("period", "dinner"), ("card_no", "C2")):
        assert mac != rules.record_mac(Algorithm.SM4, b"k" * 16, {**fields, name: other}), name


def test_a_card_purse_sale_needs_no_offline_allowance_but_respects_the_blacklist():
    kw = {"mode": Mode.FREE, "list_fen": 1200, "period": LUNCH, "pin_verified": False}

    allowed = rules.decide_card_purse(HolderRule(), Usage(), blacklisted=False, **kw)
    refused = rules.decide_card_purse(HolderRule(), Usage(), blacklisted=True, **kw)

    assert (allowed.allow, allowed.amount_fen) == (True, 1200)
    assert refused.reason is CanteenReason.CARD_BLACKLISTED
