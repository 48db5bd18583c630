"""M1 (MIFARE Classic) emulator: §11 platform keys, authentication, access bits, value blocks,
and the PC/SC pseudo-APDU front."""

from __future__ import annotations

import pytest

from onecard.device_agents.emulators.m1 import (
    DEFAULT_KEY,
    M1Card,
    M1Error,
    m1_sector_keys,
    personalise_m1,
)
from onecard.keys.algorithms import Algorithm

H = bytes.fromhex
UID, APP = H("A1B2C3D4"), 0x0001
CASES = [
    pytest.param(Algorithm.TDES, "3des", id="3des"),
    pytest.param(Algorithm.SM4, "sm4", id="sm4"),
]


@pytest.mark.parametrize(("algorithm", "name"), CASES)
def test_sector_keys_follow_the_platform_design_vectors(kit, algorithm, name):
    inputs = kit.VECTORS["inputs"]["m1_platform_design"]
    master = H(inputs[f"mk_m1_{name}"])
    for sector, expected in kit.VECTORS["m1_platform_design_NOT_A_STANDARD"]["sectors"].items():
        keys = m1_sector_keys(algorithm, master, UID, APP, int(sector))
        assert keys.key_a.hex().upper() == expected[f"keyA_{name}"]
        assert keys.key_b.hex().upper() == expected[f"keyB_{name}"]


@pytest.fixture
def wallet():
    card = M1Card(UID)
    keys = personalise_m1(card, algorithm=Algorithm.TDES, m1_master=H("5A" * 8 + "A5" * 8),
                          app_code=APP, sectors={1: 5_000})  # fmt: skip
    return card, keys[1]


def test_key_a_decrements_but_cannot_increment(wallet):
    card, keys = wallet
    assert card.authenticate(4, "A", keys.key_a)
    card.decrement(4, 300)
    card.transfer(4)
    assert card.value(4) == 4_700
    with pytest.raises(M1Error):
        card.increment(4, 100)


def test_key_b_increments_the_purse(wallet):
    card, keys = wallet
    assert card.authenticate(4, "B", keys.key_b)
    card.increment(4, 1_000)
    card.transfer(4)
    assert card.value(4) == 6_000


def test_restore_and_transfer_copy_a_value_block_as_backup(wallet):
    card, keys = wallet
    card.authenticate(4, "B", keys.key_b)
    card.restore(4)
    card.transfer(5)
    assert card.value(5) == 5_000


def test_wrong_key_or_other_sector_grants_nothing(wallet):
    card, keys = wallet
    assert not card.authenticate(4, "A", DEFAULT_KEY)
    with pytest.raises(M1Error):
        card.read(4)
    card.authenticate(4, "A", keys.key_a)
    with pytest.raises(M1Error):
        card.read(8)


def test_key_a_reads_trailer_without_keys_and_cannot_rewrite_them(wallet):
    card, keys = wallet
    card.authenticate(7, "A", keys.key_a)
    trailer = card.read(7)
    assert trailer[:6] == bytes(6)
    assert trailer[10:] == bytes(6)
    with pytest.raises(M1Error):
        card.write(7, DEFAULT_KEY + trailer[6:10] + DEFAULT_KEY)


def test_value_operations_through_pcsc_pseudo_apdus(wallet):
    card, keys = wallet
    assert card.process_apdu(H("FFCA000000")) == UID + H("9000")
    assert card.process_apdu(H("FF82000006") + keys.key_a) == H("9000")
    assert card.process_apdu(H("FF860000050100046000")) == H("9000")
    assert card.process_apdu(H("FFD700040502000000C8")) == H("9000")
    assert card.process_apdu(H("FFB1000404")) == (4_800).to_bytes(4, "big") + H("9000")
    assert card.process_apdu(H("FFD700040501000000C8")) == H("6300")  # key A may not increment
    assert card.process_apdu(H("FF")) == H("6700")
