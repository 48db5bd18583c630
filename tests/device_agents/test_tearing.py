"""Power loss at every APDU of a load, purchase and CAPP purchase (epurse.md §14): after the
card is powered up again (reloaded from its image file) and the terminal recovers, no money was
lost or created, and every committed transaction has a clearing record with a valid TAC."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from onecard.device_agents.emulators.cpu_card import CpuCard, TearPoint
from onecard.device_agents.protocol.clearing import MAC2_RECOVERED
from onecard.device_agents.terminal.channel import CardGoneError, InProcessChannel
from onecard.device_agents.terminal.load import load
from onecard.device_agents.terminal.pending import TornTransaction
from onecard.device_agents.terminal.psam import PsamSession
from onecard.device_agents.terminal.purchase import CappUpdate, purchase
from onecard.device_agents.terminal.recovery import recover
from onecard.keys.algorithms import Algorithm

NOW = datetime(2024, 3, 1, 10, 15, 0)
START, AMOUNT = 10_000, 700
POINTS = list(TearPoint)


class CountingChannel(InProcessChannel):
    def __init__(self, emulator: Any) -> None:
        super().__init__(emulator)
        self.count = 0

    def transmit(self, apdu: bytes) -> bytes:
        self.count += 1
        return super().transmit(apdu)


def _flows(kit: SimpleNamespace) -> dict[str, Callable[..., Any]]:
    def capp(old: bytes | None) -> bytes:
        return bytes((0x01, 0x05, 0x00, 0x01, 0x02, 0x03, 0x04))

    return {
        "load": lambda ch, psam, hsm: load(
            ch, hsm, amount=AMOUNT, terminal=kit.TERMINAL, pin=kit.PIN
        ),
        "purchase": lambda ch, psam, hsm: purchase(ch, psam, amount=AMOUNT, now=NOW),
        "capp": lambda ch, psam, hsm: purchase(
            ch, psam, amount=AMOUNT, now=NOW, capp=CappUpdate(0x01, capp)
        ),
    }


def _apdu_count(kit: SimpleNamespace, flow: Callable[..., Any]) -> int:
    channel = CountingChannel(kit.make_card())
    flow(channel, PsamSession(InProcessChannel(kit.make_psam())), kit.DevHsm())
    return channel.count


def _run_torn(kit, flow, algorithm, path: Path, index: int, point: TearPoint) -> dict[str, Any]:
    """Run ``flow`` with a tear at APDU ``index``; power up from the file; recover."""
    card = kit.make_card(algorithm, balance=START, path=path)
    psam, hsm = PsamSession(InProcessChannel(kit.make_psam())), kit.DevHsm()
    card.arm_tear(skip=index, point=point)
    outcome: dict[str, Any] = {"hsm": hsm, "record": None}
    try:
        outcome["record"] = flow(InProcessChannel(card), psam, hsm).record
    except TornTransaction as torn:
        revived = CpuCard.open(path)
        recovered = recover(InProcessChannel(revived), torn.pending, psam=psam)
        outcome["record"] = recovered.record
        outcome["recovered"] = recovered
    except CardGoneError:
        pass  # lost before INITIALIZE answered: nothing can have moved
    outcome["balance"] = CpuCard.open(path).image.purse.balance
    return outcome


@pytest.mark.parametrize("algorithm", list(Algorithm), ids=lambda a: a.value)
@pytest.mark.parametrize("kind", ["load", "purchase", "capp"])
def test_power_loss_at_any_apdu_never_loses_or_creates_money(kit, tmp_path, algorithm, kind):
    flow = _flows(kit)[kind]
    sign = 1 if kind == "load" else -1
    for index in range(_apdu_count(kit, flow)):
        for point in POINTS:
            path = tmp_path / f"{index}-{point.value}.json"
            outcome = _run_torn(kit, flow, algorithm, path, index, point)
            record, hsm = outcome["record"], outcome["hsm"]
            moved = record is not None
            assert outcome["balance"] == START + (sign * AMOUNT if moved else 0), (index, point)
            if kind == "load" and hsm.issued and not moved:
                hsm.refund(AMOUNT)  # host reverses the account debit of an uncommitted load
            if kind == "load":
                assert outcome["balance"] + hsm.account == START + 1_000_000, (index, point)
            if moved:
                assert record.tac == kit.dev_tac(record), (index, point)


def test_tac_of_a_debit_torn_after_commit_is_recovered_from_the_card_file(kit, tmp_path):
    path = tmp_path / "card.json"
    card = kit.make_card(path=path)
    psam = PsamSession(InProcessChannel(kit.make_psam()))
    card.arm_tear(ins=0x54, point=TearPoint.AFTER_COMMIT)
    with pytest.raises(TornTransaction) as torn:
        purchase(InProcessChannel(card), psam, amount=AMOUNT, now=NOW)
    recovered = recover(InProcessChannel(CpuCard.open(path)), torn.value.pending, psam=psam)
    assert recovered.committed
    assert recovered.mac2_ok
    assert recovered.record.mac2_status == MAC2_RECOVERED
    assert recovered.record.tac == kit.dev_tac(recovered.record)


def test_debit_torn_before_commit_is_reported_as_not_charged(kit, tmp_path):
    path = tmp_path / "card.json"
    card = kit.make_card(path=path)
    psam = PsamSession(InProcessChannel(kit.make_psam()))
    card.arm_tear(ins=0x54, point=TearPoint.BEFORE_COMMIT)
    with pytest.raises(TornTransaction) as torn:
        purchase(InProcessChannel(card), psam, amount=AMOUNT, now=NOW)
    recovered = recover(InProcessChannel(CpuCard.open(path)), torn.value.pending, psam=psam)
    assert not recovered.committed
    assert CpuCard.open(path).image.purse.balance == START
