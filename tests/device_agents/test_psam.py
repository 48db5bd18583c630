"""PSAM emulator: files, persistent TTS, MAC2 sequencing, generic crypto (§8)."""

from __future__ import annotations

from onecard.device_agents.emulators.psam import Psam

H = bytes.fromhex
MAC1_TWO_LEVEL = ("80700000245E6F7A8B00120000006406202403011015000100"
                  "10000000123456782000FF000000000008")  # fmt: skip


def _send(psam, apdu_hex: str) -> str:
    return psam.process_apdu(H(apdu_hex)).hex().upper()


def test_terminal_number_and_serial_are_readable(kit):
    psam = kit.make_psam(tts=7)
    assert _send(psam, "00B0960006") == kit.TERMINAL.hex().upper() + "9000"
    assert _send(psam, "00B095000E").endswith("9000")
    assert _send(psam, "00A40000021001") == "9000"
    assert _send(psam, "00B0990004") == "000000079000"


def test_terminal_serial_increases_and_persists(kit, tmp_path):
    path = tmp_path / "psam.json"
    psam = kit.make_psam(tts=0x103, path=path)
    assert _send(psam, MAC1_TWO_LEVEL)[:8] == "00000103"
    assert _send(psam, MAC1_TWO_LEVEL)[:8] == "00000104"
    assert Psam.open(path).image.tts == 0x105


def test_mac2_without_mac1_is_refused(kit):
    assert _send(kit.make_psam(), "8072000004CD0ACE0C") == "6985"


def test_wrong_mac2_answers_9302_and_ends_the_session(kit):
    psam = kit.make_psam()
    _send(psam, MAC1_TWO_LEVEL)
    assert _send(psam, "807200000400000000") == "9302"
    assert _send(psam, "8072000004CD0ACE0C") == "6985"


def test_unknown_key_version_answers_6a88(kit):
    apdu = MAC1_TWO_LEVEL.replace("1015000100", "1015000900")
    assert _send(kit.make_psam(), apdu) == "6A88"


def test_generic_mac_needs_a_key_set_up_first(kit):
    assert _send(kit.make_psam(), "80FA050010" + "00" * 16) == "6985"


def test_generic_crypto_chained_mac_equals_single_mac(kit):
    psam = kit.make_psam()
    setup = "801A4401" + "11" + "1000000012345678" + "2000FF0000000000" + "00"
    assert _send(psam, setup) == "9000"
    single = _send(psam, "80FA050010" + "00" * 8 + "0102030405060708")
    assert _send(psam, "80FA07000C" + "00" * 8 + "01020304") == "9000"
    assert _send(psam, "80FA0300020506") == "9000"
    assert _send(psam, "80FA0100020708") == single
