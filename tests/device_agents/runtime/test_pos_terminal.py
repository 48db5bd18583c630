"""The canteen POS personality inside the agent: offline sales as MACed ``canteen_sale``
records, counters that survive a restart, the blacklist, the platform's decisions shown with
the POS's text and beep, and the MAC key as the operator gives it. The agent runs without a
broker here (it publishes into a list); ``tests/modules/canteen/test_offline_over_mqtt.py``
runs the same over MQTT against the platform."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from onecard.device_agents.agent_cli import agent_command
from onecard.device_agents.personalities.pos_records import (
    PosKey,
    PosKeyError,
    mac_message,
)
from onecard.device_agents.protocol.blacklist import credential_key
from onecard.device_agents.protocol.codes import CredentialKind, DeviceKind, ReasonCode
from onecard.device_agents.runtime.agent import Agent, AgentSettings, LocalDecision, Presented
from onecard.device_agents.runtime.clock import DeviceClock
from onecard.device_agents.runtime.configfiles import ConfigFiles
from onecard.device_agents.runtime.personality import load_personality
from onecard.device_agents.runtime.pos_terminal import PosTerminal, read_pos_key
from onecard.device_agents.runtime.store import AgentStore, open_database
from onecard.keys import algorithms as alg
from onecard.keys.algorithms import Algorithm
from onecard.keys.terminals import terminal_mac

DEVICE = "pos-a"
NOON_MS = 1_788_235_200_000  # 2026-09-01 12:00 in Shanghai
KEY = PosKey(Algorithm.SM4, 2, bytes(range(32, 48)))
CARD = "04a1b2c3"
BODY = {
    "device_id": DEVICE,
    "kind": "pos",
    "settings": {
        "mode": "free",
        "zone": "Asia/Shanghai",
        "meal_periods": [{"key": "lunch", "starts": "11:00", "ends": "13:30"}],
        "offline": {"enabled": True, "amount_fen": 5000, "count": 2},
    },
}


class Pos:
    """An agent with the POS personality on a store in ``folder``, offline until connected."""

    def __init__(self, folder: Path, *, key: PosKey | None = KEY) -> None:
        self.sent: list[tuple[str, dict]] = []
        store = AgentStore(open_database(folder / "agent.db"), DEVICE, new_epoch="ep-0001")
        settings = AgentSettings(device_id=DEVICE, kind=DeviceKind.POS)
        pos = load_personality(settings, store)
        assert isinstance(pos, PosTerminal)
        if key is not None:
            pos.install_key(key)
        self.pos = pos
        self.agent = Agent(settings, store, ConfigFiles(folder / "config", fsync=False),
                           clock=DeviceClock(lambda: NOON_MS), monotonic=lambda: 0.0,
                           rng=random.Random(1), personality=pos)  # fmt: skip
        self.agent.attach(lambda t, p, _q, _r: self.sent.append((t, json.loads(p))))
        pos.configure(BODY)

    def sell(self, fen: int, card: str = CARD) -> LocalDecision:
        got: list[LocalDecision] = []
        self.agent.present(Presented.uid(card, fen), got.append)
        return got[0]

    def stored(self) -> list[dict]:
        return [r.model_dump(mode="json") for r in self.agent.store.records()]

    def close(self) -> None:
        self.agent.store.conn.close()


@pytest.fixture
def pos(tmp_path):
    made = Pos(tmp_path)
    yield made
    made.close()


def test_an_offline_sale_is_stored_as_a_canteen_sale_maced_with_the_pos_key(pos):
    decision = pos.sell(1200)

    [record] = pos.stored()
    covered = {
        "device_id": DEVICE, "epoch": "ep-0001", "seq": 1, "card_no": CARD, "amount_fen": 1200,
        "list_fen": 1200, "device_time": NOON_MS, "period": "lunch",
    }  # fmt: skip
    assert (decision.allow, decision.online, decision.seq) == (True, False, 1)
    assert (decision.display, decision.beep) == ("消费成功 ¥12.00", "ok")
    assert (record["event"], record["credential"], record["amount"], record["flags"]) == (
        "canteen_sale", {"kind": "uid", "value": CARD}, 1200, ["offline"],
    )  # fmt: skip
    mac = terminal_mac(KEY.algorithm, KEY.key, mac_message(covered)).hex()
    assert record["extra"] == {"list_fen": 1200, "period": "lunch", "mac": mac, "key_version": 2}


def test_the_pos_counters_survive_a_restart(tmp_path):
    first = Pos(tmp_path)
    first.sell(1200)
    first.sell(1200)
    first.close()

    again = Pos(tmp_path)
    refused = again.sell(1200)
    again.close()

    assert (refused.allow, refused.reason, refused.detail) == (
        False, ReasonCode.OFFLINE_NOT_ALLOWED, "offline_count_exceeded",
    )  # fmt: skip
    assert (refused.display, refused.beep, refused.seq) == ("超出脱机次数 ¥12.00", "deny", 3)


def test_a_refusal_is_stored_as_a_tap_record_with_the_canteen_reason(pos):
    pos.sell(6000)  # over the 50.00 allowance

    [record] = pos.stored()

    assert (record["event"], record["allow"], record["reason"], record["detail"]) == (
        "tap", False, "OFFLINE_NOT_ALLOWED", "offline_amount_exceeded",
    )  # fmt: skip
    assert record["amount"] is None


def test_a_pos_without_its_key_makes_no_offline_sales(tmp_path):
    keyless = Pos(tmp_path, key=None)

    refused = keyless.sell(1200)
    keyless.close()

    assert (refused.allow, refused.detail, refused.display) == (
        False, "offline_disabled", "脱机不可消费",
    )  # fmt: skip


def test_a_card_on_the_blacklist_delta_is_refused_offline(pos):
    delta = {"v": 1, "kind": "delta", "list": "blacklist", "from": 0, "to": 1,
             "add": [credential_key(CredentialKind.UID, CARD)], "remove": []}  # fmt: skip
    pos.agent.on_message(f"oc/v1/{DEVICE}/down/lists", json.dumps(delta).encode())

    refused = pos.sell(1200)

    assert (refused.allow, refused.detail, refused.display, refused.beep) == (
        False, "card_blacklisted", "此卡已挂失或冻结", "deny",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "display", "beep"),
    [
        ({"allow": True, "reason": "OK", "detail": "ok", "balance": 8800},
         "消费成功 ¥12.00 余额 ¥88.00", "ok"),
        ({"allow": False, "reason": "LIMIT_REACHED", "detail": "meal_already_taken"},
         "本餐已消费 ¥12.00", "deny"),
        ({"allow": False, "reason": "CARD_LOST"}, "此卡已挂失或冻结 ¥12.00", "deny"),
        ({"allow": False, "reason": "NO_HANDLER", "display": "No module"}, "No module", "error"),
    ],
)  # fmt: skip
def test_the_platforms_decision_is_shown_with_the_pos_text_and_beep(pos, answer, display, beep):
    pos.agent.on_connect()
    got: list[LocalDecision] = []
    pos.agent.present(Presented.uid(CARD, 1200), got.append)
    [request] = [body for topic, body in pos.sent if topic.endswith("/up/tap")]

    reply = {"v": 1, "req_id": request["req_id"], **answer}
    pos.agent.on_message(f"oc/v1/{DEVICE}/down/tap", json.dumps(reply).encode())

    assert [(d.online, d.display, d.beep) for d in got] == [(True, display, beep)]


def test_each_decision_is_logged_with_its_text_and_beep_never_the_key(pos, caplog):
    with caplog.at_level(logging.INFO, logger="onecard.device_agents.runtime.pos_terminal"):
        pos.sell(1200)

    assert "消费成功 ¥12.00 [beep ok] (offline)" in caplog.text
    assert KEY.key.hex() not in caplog.text


def key_document(folder: Path, transport: bytes) -> Path:
    """What ``onecard canteen pos-key`` prints, in a file."""
    doc = {
        "device": DEVICE,
        "transport": {"version": 1, "kcv": alg.kcv(Algorithm.SM4, transport).hex()},
        "keys": [{"name": "RMK", "version": 2, "algorithm": "sm4",
                  "wrapped": alg.ecb_encrypt(Algorithm.SM4, transport, KEY.key).hex(),
                  "kcv": alg.kcv(Algorithm.SM4, KEY.key).hex()}],
    }  # fmt: skip
    path = folder / "pos-a.key.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_the_operator_gives_the_wrapped_key_and_the_transport_key(tmp_path):
    transport = bytes(range(16))
    path = key_document(tmp_path, transport)

    assert read_pos_key(path, transport.hex()) == KEY
    with pytest.raises(PosKeyError, match="hex expected"):
        read_pos_key(path, "not hex")


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--kind", "door", "--transport-key", "00" * 16], "only a POS"),
        (["--kind", "pos"], "needs --transport-key"),
        (["--kind", "pos", "--transport-key", "11" * 16], "transport KCV"),
    ],
)
def test_the_agent_command_refuses_a_key_it_cannot_use(tmp_path, args, complaint):
    path = key_document(tmp_path, bytes(16))
    common = ["--device", DEVICE, "--store", str(tmp_path / "store"), "--pos-key", str(path)]

    result = CliRunner().invoke(
        agent_command, [*common, *args], env={"ONECARD_TRANSPORT_KEY": None}
    )

    assert result.exit_code == 2
    assert complaint in result.output
    assert KEY.key.hex() not in result.output
