"""Terminal flows against the in-process emulators: load, purchase, CAPP purchase, the clearing
record of §12, and TAC recomputation through the PSAM."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from onecard.device_agents.protocol.clearing import MAC2_VERIFIED, ClearingRecord
from onecard.device_agents.terminal.channel import InProcessChannel, StatusError
from onecard.device_agents.terminal.load import load
from onecard.device_agents.terminal.psam import PsamSession
from onecard.device_agents.terminal.purchase import CappUpdate, purchase
from onecard.keys.algorithms import Algorithm

NOW = datetime(2024, 3, 1, 10, 15, 0)
CASES = [
    pytest.param(profile, algorithm, id=f"{profile}-{algorithm.value}")
    for profile in ("mohurd", "mot", "campus")
    for algorithm in Algorithm
]


def _trip(old: bytes | None) -> bytes:
    """Toy compound record: header (id 01, length, unlocked) + a trip counter byte."""
    count = old[3] + 1 if old else 1
    return bytes((0x01, 0x2E, 0x00, count)) + bytes(0x2C)


@pytest.mark.parametrize(("profile", "algorithm"), CASES)
def test_load_then_purchase_then_capp_purchase_move_exactly_the_amounts(
    kit, hsm, profile, algorithm
):
    issuer = None if profile == "campus" else kit.ISSUER
    card = kit.make_card(algorithm, profile=profile, balance=10_000, issuer=issuer)
    channel, psam = InProcessChannel(card), PsamSession(InProcessChannel(kit.make_psam()))

    loaded = load(channel, hsm, amount=1_000, terminal=kit.TERMINAL, pin=kit.PIN)
    bought = purchase(channel, psam, amount=100, now=NOW)
    trip = purchase(channel, psam, amount=200, now=NOW, capp=CappUpdate(0x01, _trip))

    assert (loaded.balance_after, bought.balance_after, trip.balance_after) == (
        11_000,
        10_900,
        10_700,
    )
    assert card.image.purse.balance == 10_700
    assert hsm.account == 1_000_000 - 1_000
    assert bought.mac2_ok
    assert trip.mac2_ok
    for result in (loaded, bought, trip):
        assert result.record.tac == kit.dev_tac(result.record)
    assert card.image.capp[0x1A][0x01][3] == 1


def test_clearing_record_of_the_spec_purchase_has_the_spec_fields(kit, hsm):
    card = kit.make_card(balance=11_000, counters=(6, 0x12), rng=kit.FixedRandom("5E6F7A8B"))
    psam = PsamSession(InProcessChannel(kit.make_psam(tts=0x103)))
    record = purchase(InProcessChannel(card), psam, amount=100, now=NOW).record
    fields = kit.VECTORS["3des"]["purchase"]["clearing_record_fields"]
    assert record.tac.hex().upper() == fields["tac"]
    assert (record.counter, record.serial, record.balance_before) == (0x12, 0x103, 11_000)
    assert record.issuer_factor == kit.ISSUER
    assert record.asn == bytes(2) + kit.ASN
    assert record.mac2_status == MAC2_VERIFIED
    assert record.scheme == 0x01


def test_clearing_record_round_trips_through_its_80_byte_form(kit, hsm):
    card = kit.make_card()
    psam = PsamSession(InProcessChannel(kit.make_psam()))
    record = purchase(InProcessChannel(card), psam, amount=42, now=NOW).record
    raw = record.to_bytes()
    assert len(raw) == 80
    assert ClearingRecord.from_bytes(raw) == record
    with pytest.raises(ValueError, match="checksum"):
        ClearingRecord.from_bytes(raw[:60] + b"\xff" + raw[61:])


@pytest.mark.parametrize("algorithm", list(Algorithm), ids=lambda a: a.value)
def test_psam_recomputes_the_card_tac_for_clearing(kit, algorithm):
    card = kit.make_card(algorithm)
    psam = PsamSession(InProcessChannel(kit.make_psam()))
    record = purchase(InProcessChannel(card), psam, amount=300, now=NOW).record
    tac = psam.recompute_tac(record.card_factors(), record.key_version, record.alg_id,
                             record.tac_data())  # fmt: skip
    assert tac == record.tac


def test_purchase_refused_when_purse_short_leaves_balance_alone(kit):
    card = kit.make_card(balance=50)
    psam = PsamSession(InProcessChannel(kit.make_psam()))
    with pytest.raises(StatusError) as refused:
        purchase(InProcessChannel(card), psam, amount=51, now=NOW)
    assert refused.value.sw == bytes.fromhex("9401")
    assert card.image.purse.balance == 50


def test_load_refused_without_pin(kit, hsm):
    card = kit.make_card()
    with pytest.raises(StatusError) as refused:
        load(InProcessChannel(card), hsm, amount=100, terminal=kit.TERMINAL)
    assert refused.value.sw == bytes.fromhex("6982")
    assert hsm.account == 1_000_000


def test_load_from_a_card_with_foreign_keys_is_refused_by_the_host(kit, hsm):
    foreign = kit.make_card(Algorithm.SM4, asn=bytes.fromhex("1000000012345679"))
    card = kit.make_card(Algorithm.SM4)
    card._image = replace(card.image, keys=foreign.image.keys)
    with pytest.raises(ValueError, match="MAC1"):
        load(InProcessChannel(card), hsm, amount=100, terminal=kit.TERMINAL, pin=kit.PIN)
    assert card.image.purse.balance == 10_000
    assert hsm.account == 1_000_000
