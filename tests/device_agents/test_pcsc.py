"""The same terminal flows through the real stack: pyscard → pcscd → vpcd → our emulators.

The card sits in vpcd slot 0 ("Virtual PCD 00 00", port 35963) and the PSAM in slot 1
("Virtual PCD 00 01", port 35964), like a terminal with a contactless reader and a SAM slot.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from onecard.device_agents.emulators.cpu_card import CpuCard, TearPoint
from onecard.device_agents.readers.pcsc import PcscChannel
from onecard.device_agents.readers.vpcd import VpcdTransport
from onecard.device_agents.terminal.load import load
from onecard.device_agents.terminal.pending import TornTransaction
from onecard.device_agents.terminal.psam import PsamSession
from onecard.device_agents.terminal.purchase import CappUpdate, purchase
from onecard.device_agents.terminal.recovery import recover
from onecard.keys.algorithms import Algorithm

NOW = datetime(2024, 3, 1, 10, 15, 0)
CARD_READER, PSAM_READER = "Virtual PCD 00 00", "Virtual PCD 00 01"
REMOVAL_SETTLE = 0.5  # pcscd still reports a removed card for a while (toolchain.md §1)


class Terminal:
    """A card and a PSAM inserted into the two vpcd readers, with pyscard channels to both."""

    def __init__(self, card: Any, psam: Any) -> None:
        self.card_slot = VpcdTransport(card, port=35963).start()
        self.psam_slot = VpcdTransport(psam, port=35964).start()
        self.card = PcscChannel(CARD_READER)
        self.psam = PsamSession(PcscChannel(PSAM_READER))

    def reinsert_card(self, card: Any) -> None:
        """Remove the card, wait for pcscd to notice, insert ``card`` and reconnect."""
        self.card_slot.stop()
        time.sleep(REMOVAL_SETTLE)
        self.card_slot = VpcdTransport(card, port=35963).start()
        self.card.reconnect()

    def close(self) -> None:
        self.card.close()
        self.psam.ex.channel.close()  # type: ignore[attr-defined]
        self.card_slot.stop()
        self.psam_slot.stop()
        time.sleep(REMOVAL_SETTLE)


@pytest.fixture
def terminal_factory(pcscd) -> Iterator[Any]:
    opened: list[Terminal] = []

    def make(card: Any, psam: Any) -> Terminal:
        opened.append(Terminal(card, psam))
        return opened[-1]

    yield make
    for terminal in opened:
        terminal.close()


def _trip(old: bytes | None) -> bytes:
    return bytes((0x01, 0x04, 0x00, 0x00, 0x01, 0x02))


@pytest.mark.parametrize("algorithm", list(Algorithm), ids=lambda a: a.value)
def test_load_purchase_and_capp_purchase_through_pcscd(kit, terminal_factory, algorithm):
    card = kit.make_card(algorithm, balance=10_000)
    terminal = terminal_factory(card, kit.make_psam())
    hsm = kit.DevHsm()
    loaded = load(terminal.card, hsm, amount=1_000, terminal=terminal.psam.terminal, pin=kit.PIN)
    bought = purchase(terminal.card, terminal.psam, amount=100, now=NOW)
    trip = purchase(terminal.card, terminal.psam, amount=200, now=NOW, capp=CappUpdate(1, _trip))
    assert [r.balance_after for r in (loaded, bought, trip)] == [11_000, 10_900, 10_700]
    assert bought.mac2_ok
    assert trip.mac2_ok
    assert all(r.record.tac == kit.dev_tac(r.record) for r in (loaded, bought, trip))
    assert card.image.purse.balance == 10_700


def test_torn_purchase_recovered_through_pcscd(kit: SimpleNamespace, terminal_factory, tmp_path):
    path = tmp_path / "card.json"
    card = kit.make_card(path=path)
    terminal = terminal_factory(card, kit.make_psam())
    card.arm_tear(ins=0x54, point=TearPoint.AFTER_COMMIT)
    with pytest.raises(TornTransaction) as torn:
        purchase(terminal.card, terminal.psam, amount=700, now=NOW)
    terminal.reinsert_card(CpuCard.open(path))
    recovered = recover(terminal.card, torn.value.pending, psam=terminal.psam)
    assert recovered.committed
    assert recovered.mac2_ok
    assert recovered.record.tac == kit.dev_tac(recovered.record)
    assert recovered.record.balance_after == CpuCard.open(path).image.purse.balance == 9_300
