"""Property tests: random and mutated APDUs never crash the card or PSAM emulators, always get
a status word, and never change a balance without a valid MAC."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onecard.device_agents.emulators.m1 import M1Card

H = bytes.fromhex
SETTINGS = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
SEEDS = [
    "00A4040009A00000000386980701", "0020000003123456", "805000020B01000003E811223344556610",
    "805200000B202403010930150A96C1DD04", "805001020B01000000641122334455660F",
    "805401000F000001032024030110150044B17F1608", "80DC01D030012E" + "00" * 46,
    "805003020B01000000C81122334455660F", "805C000204", "805A000602001208", "00B201C417",
    "0084000008", "04D6960208AABBCCDD11223344", "00B095001E",
]  # fmt: skip
PSAM_SEEDS = [
    "80700000245E6F7A8B0012000000640620240301101500010010000000123456782000FF000000000008",
    "8072000004CD0ACE0C", "801A4401111000000012345678" + "2000FF000000000000",
    "80FA050010" + "00" * 16, "00B0960006", "00A40000021001",
]  # fmt: skip


def _mutated(seeds: list[str]) -> st.SearchStrategy[bytes]:
    def mutate(seed: str, flips: list[tuple[int, int]], cut: int) -> bytes:
        raw = bytearray(H(seed))
        for pos, value in flips:
            raw[pos % len(raw)] = value
        return bytes(raw[: max(cut, 0) or len(raw)])

    flips = st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), max_size=4)
    return st.builds(mutate, st.sampled_from(seeds), flips, st.integers(-5, 60))


APDUS = st.one_of(st.binary(max_size=300), _mutated(SEEDS))


@SETTINGS
@given(apdus=st.lists(APDUS, min_size=1, max_size=12))
def test_random_apdus_never_crash_the_card_nor_move_money(kit, apdus):
    card = kit.make_card(counters=(5, 0x12))
    before = card.image.purse.balance
    for apdu in apdus:
        response = card.process_apdu(apdu)
        assert len(response) >= 2
        assert response[-2:] != b"\x6f\x00", apdu.hex()
    assert card.image.purse.balance == before
    assert card.image.records == ()


@SETTINGS
@given(apdus=st.lists(st.one_of(st.binary(max_size=80), _mutated(PSAM_SEEDS)), max_size=12))
def test_random_apdus_never_crash_the_psam(kit, apdus):
    psam = kit.make_psam()
    for apdu in apdus:
        response = psam.process_apdu(apdu)
        assert len(response) >= 2
        assert response[-2:] != b"\x6f\x00", apdu.hex()


@SETTINGS
@given(apdus=st.lists(st.binary(max_size=40), max_size=12))
def test_random_apdus_never_crash_the_m1_card(apdus):
    card = M1Card(H("A1B2C3D4"))
    for apdu in apdus:
        response = card.process_apdu(apdu)
        assert len(response) >= 2
        assert response[-2:] != b"\x6f\x00", apdu.hex()
