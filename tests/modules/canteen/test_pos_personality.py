"""The POS terminal personality: display texts, beeps and the offline decision on the device."""

from datetime import UTC, datetime, time

from onecard.device_agents.personalities import pos as device_pos
from onecard.device_agents.personalities import pos_records, pos_rules
from onecard.device_agents.protocol.asyncapi import validate_message
from onecard.modules.canteen import pos as terminal
from onecard.modules.canteen import rules
from onecard.modules.canteen.rules import Allowance, CanteenReason, HolderRule, MealPeriod, Mode

LUNCH = MealPeriod("lunch", time(11, 0), time(13, 30))
NOON = datetime(2026, 9, 1, 4, 0, tzinfo=UTC)


def offline_pos(**kw):
    return terminal.OfflinePos(
        device_id="pos-a", device_key=b"a" * 16, zone="Asia/Shanghai", periods=(LUNCH,),
        mode=Mode.FREE, fixed_prices={}, **kw,
    )  # fmt: skip


def test_paid_screen_shows_amount_and_balance_in_chinese():
    shown = terminal.screen(CanteenReason.OK, amount_fen=1080, balance_fen=8920)

    assert (shown.line1, shown.line2, shown.beep) == (
        "消费成功",
        "¥10.80 余额 ¥89.20",
        terminal.Beep.OK,
    )


def test_reply_detail_picks_the_canteen_text_in_english():
    reply = {"allow": False, "reason": "LIMIT_REACHED", "detail": "meal_already_taken"}

    shown = terminal.screen_for_reply(reply, lang="en")

    assert shown.line1 == "Meal already taken"
    assert shown.beep is terminal.Beep.DENY


def test_pin_prompt_has_its_own_beep():
    assert terminal.screen(CanteenReason.PIN_REQUIRED).beep is terminal.Beep.PIN


def test_offline_pos_stops_at_the_daily_count_and_refuses_blacklisted_cards():
    device = offline_pos(blacklist={"LOST1"})
    allowance, rule = Allowance(amount_fen=5000, count=2), HolderRule()

    first = device.sell("C1", NOON, rule, allowance, list_fen=800)
    second = device.sell("C1", NOON, rule, allowance, list_fen=800)
    third = device.sell("C1", NOON, rule, allowance, list_fen=800)
    lost = device.sell("LOST1", NOON, rule, allowance, list_fen=800)

    assert [v.allow for v, _r, _s in (first, second, third)] == [True, True, False]
    assert third[0].reason is CanteenReason.OFFLINE_COUNT_EXCEEDED
    assert lost[0].reason is CanteenReason.CARD_BLACKLISTED
    assert [r["seq"] for _v, r, _s in (first, second) if r] == [1, 2]
    assert first[1] is not None
    assert len(bytes.fromhex(str(first[1]["extra"]["mac"]))) == 4  # type: ignore[index]


def test_offline_records_are_valid_protocol_records_of_the_canteen_sale_event():
    device = offline_pos()
    _v, record, _s = device.sell("C1", NOON, HolderRule(), Allowance(5000, 2), list_fen=800)
    _v, paid, _s = device.sell_from_card(
        "C2", NOON, HolderRule(), pay=lambda fen: bytes(80), list_fen=900
    )
    batch = {"v": 1, "epoch": device.epoch, "records": [record, paid]}

    validate_message("oc/v1/pos-a/up/records", batch)
    assert [r["event"] for r in batch["records"]] == ["canteen_sale", "canteen_sale"]
    assert (record["amount"], record["device_time"]) == (800, 1_788_235_200_000)
    assert "mac" not in paid["extra"]
    assert paid["clearing"] == "00" * 80


def test_the_canteen_and_its_pos_agents_run_the_same_personality_and_rules():
    assert terminal.OfflinePos is device_pos.OfflinePos
    assert terminal.screen is device_pos.screen
    assert rules.decide_offline is pos_rules.decide_offline
    assert rules.mac_message is pos_records.mac_message


def test_a_reply_shows_the_balance_it_carries():
    reply = {"allow": True, "reason": "OK", "detail": "ok", "balance": 8920}

    shown = terminal.screen_for_reply(reply, amount_fen=1080)

    assert shown.text == "消费成功 ¥10.80 余额 ¥89.20"
