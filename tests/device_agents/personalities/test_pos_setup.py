"""A POS reads what it needs to decide alone from its signed configuration bundle."""

from datetime import time

import pytest

from onecard.device_agents.personalities.pos_rules import Allowance, HolderRule, MealPeriod, Mode
from onecard.device_agents.personalities.pos_setup import PosSetup

SETTINGS = {
    "mode": "fixed",
    "lang": "en",
    "zone": "Asia/Shanghai",
    "meal_periods": [{"key": "lunch", "starts": "11:00", "ends": "13:30"}],
    "fixed_prices": {"lunch": 1200, "bad": -5},
    "offline": {"enabled": True, "amount_fen": 1500, "count": 2,
                "rule": {"per_meal_limit_fen": 3000, "pin_threshold_fen": True}},
}  # fmt: skip


def body(**settings):
    return {"device_id": "pos-a", "kind": "pos", "settings": {**SETTINGS, **settings}}


def test_the_setup_comes_from_the_bundle_settings():
    setup = PosSetup.from_body(body())

    assert setup == PosSetup(
        zone="Asia/Shanghai",
        periods=(MealPeriod("lunch", time(11), time(13, 30)),),
        mode=Mode.FIXED,
        fixed_prices={"lunch": 1200},
        lang="en",
        rule=HolderRule(per_meal_limit_fen=3000),  # a bool is no amount: ignored
        allowance=Allowance(1500, 2),
    )


@pytest.mark.parametrize(
    "broken",
    [
        {"zone": "Mars/Olympus"},
        {"meal_periods": [{"key": "lunch", "starts": "noon", "ends": "13:30"}]},
        {"meal_periods": "lunch"},
        {"offline": {"enabled": False, "amount_fen": 1500, "count": 2}},
        {"offline": {"enabled": True, "amount_fen": "15.00", "count": 2}},
    ],
)
def test_a_pos_never_guesses_so_a_doubtful_setting_turns_offline_sales_off(broken):
    assert PosSetup.from_body(body(**broken)).allowance is None


def test_without_a_bundle_the_pos_has_no_meal_periods_and_no_offline_sales():
    setup = PosSetup.from_body({})

    assert (setup.periods, setup.allowance, setup.mode, setup.lang) == ((), None, Mode.FREE, "zh")


def test_a_fixed_price_pos_charges_the_period_price_and_a_free_one_what_is_keyed():
    lunch = MealPeriod("lunch", time(11), time(13, 30))
    fixed, free = PosSetup.from_body(body()), PosSetup.from_body(body(mode="free"))

    assert (fixed.price(lunch, 999), fixed.price(None, 999)) == (1200, None)
    assert free.price(lunch, 999) == 999
