"""Card emulator rules: sequencing, PIN, MAC failures, proofs, files, persistence (§5, §9, §14)."""

from __future__ import annotations

import pytest

from onecard.device_agents.emulators.cpu_card import CpuCard
from onecard.keys import algorithms as alg

H = bytes.fromhex
SELECT = "00A4040009A00000000386980701"
INIT_PURCHASE = "805001020B0100000064" + "112233445566" + "0F"
DEBIT_BAD_MAC = "805401000F00000103202403011015000000000008"


def _send(card, apdu_hex: str) -> str:
    return card.process_apdu(H(apdu_hex)).hex().upper()


@pytest.fixture
def card(kit):
    card = kit.make_card()
    assert _send(card, SELECT).endswith("9000")
    return card


def test_debit_without_initialize_is_refused(card):
    assert _send(card, DEBIT_BAD_MAC) == "6985"


def test_any_command_between_initialize_and_debit_resets_the_purchase(card):
    _send(card, INIT_PURCHASE)
    assert _send(card, "805C000204").endswith("9000")
    assert _send(card, DEBIT_BAD_MAC) == "6985"


def test_debit_with_wrong_mac1_answers_9302_and_moves_nothing(card):
    _send(card, INIT_PURCHASE)
    assert _send(card, DEBIT_BAD_MAC) == "9302"
    assert card.image.purse == card.image.purse.__class__(10_000)
    assert _send(card, DEBIT_BAD_MAC) == "6985"  # the INITIALIZE is spent


def test_key_locks_after_three_bad_macs(card):
    for _ in range(3):
        _send(card, INIT_PURCHASE)
        _send(card, DEBIT_BAD_MAC)
    assert _send(card, INIT_PURCHASE) == "6983"


def test_wrong_pin_counts_down_then_blocks(card):
    assert _send(card, "0020000003000000") == "63C2"
    assert _send(card, "0020000003000000") == "63C1"
    assert _send(card, "0020000003000000") == "63C0"
    assert _send(card, "0020000003123456") == "6983"


def test_right_pin_restores_the_try_counter(card):
    _send(card, "0020000003000000")
    assert _send(card, "0020000003123456") == "9000"
    assert card.image.pin_tries_left == 3


def test_load_initialize_without_pin_is_refused(card):
    assert _send(card, "805000020B0100000064112233445566" + "10") == "6982"


def test_unknown_key_index_answers_9403(card):
    assert _send(card, "805001020B0700000064112233445566" + "0F") == "9403"


def test_purchase_beyond_balance_answers_9401(card):
    assert _send(card, "805001020B0100002711112233445566" + "0F") == "9401"


def test_transaction_prove_without_a_transaction_answers_9406(card):
    assert _send(card, "805A000602000008") == "9406"


def test_purse_commands_need_the_application_selected(kit):
    fresh = kit.make_card()
    assert _send(fresh, "805C000204") == "6985"


def test_files_read_by_sfi(card):
    assert _send(card, "00B095001E") == card.image.ef15.hex().upper() + "9000"
    assert len(H(_send(card, "00B0960037"))) == 57
    assert _send(card, "00B201C417") == "6A83"
    assert _send(card, "00B0970000") == "6A82"
    assert _send(card, "00B0990000") == "6986"


def test_select_by_fid_and_read_current_file(card):
    assert _send(card, "00A40000023F01").endswith("9000")
    assert _send(card, "00A40000020015") == "9000"
    assert _send(card, "00B0000004") == card.image.ef15[:4].hex().upper() + "9000"
    assert _send(card, "00A40000020099") == "6A82"


def test_unknown_instruction_and_class_answer_6d00_and_6e00(card):
    assert _send(card, "80FF000000") == "6D00"
    assert _send(card, "B0B0000000") == "6E00"
    assert _send(card, "00") == "6700"


def test_update_binary_with_damk_mac_changes_0016(kit, card):
    challenge = H(_send(card, "0084000004")[:8])
    damk = alg.diversify_path(card.image.alg, kit.masters(card.image.alg)["DAMK"],
                              [kit.ISSUER, kit.ASN])  # fmt: skip
    header, data = H("04D69602") + bytes((4 + 4,)), b"ZHAO"
    mac = alg.mac(card.image.alg, damk, header + data, challenge + bytes(4))
    assert _send(card, (header + data + mac).hex()) == "9000"
    assert card.image.ef16[2:6] == b"ZHAO"
    assert _send(card, (header + data + mac).hex()) == "6984"  # challenge is one-shot


def test_update_binary_with_wrong_mac_is_refused(card):
    _send(card, "0084000004")
    assert _send(card, "04D696020801020304AABBCCDD") == "6988"


def test_image_survives_a_reload_from_its_file(kit, tmp_path):
    path = tmp_path / "card.json"
    card = kit.make_card(path=path)
    _send(card, SELECT)
    _send(card, "0020000003000000")
    reloaded = CpuCard.open(path)
    assert reloaded.image == card.image
    assert reloaded.image.pin_tries_left == 2
