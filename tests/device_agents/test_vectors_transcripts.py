"""The spec's fixed-example APDU transcripts (epurse.md §10.2, epurse_vectors.json) replayed
byte for byte through the card and PSAM emulators, for 3DES and SM4."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from onecard.device_agents.emulators.psam import Psam, psam_image
from onecard.keys import algorithms as alg
from onecard.keys.algorithms import Algorithm

H = bytes.fromhex
ALGS = [pytest.param(Algorithm.TDES, id="3des"), pytest.param(Algorithm.SM4, id="sm4")]
MOHURD_AID_SELECT = "00A4040009A00000000386980701"


def _send(device: Any, apdu_hex: str) -> str:
    return device.process_apdu(H(apdu_hex)).hex().upper()


def _card_at_vector_state(kit: SimpleNamespace, algorithm: Algorithm) -> Any:
    rng = kit.FixedRandom("1A2B3C4D", "5E6F7A8B", "99AABBCC")
    card = kit.make_card(algorithm, balance=10_000, counters=(5, 0x12), rng=rng)
    assert _send(card, MOHURD_AID_SELECT).endswith("9000")
    assert _send(card, "0020000003" + kit.PIN.hex()) == "9000"
    return card


def _replay_load(card: Any, section: dict[str, Any]) -> None:
    apdu = section["load"]["apdu"]
    assert _send(card, apdu["INITIALIZE_FOR_LOAD"]) == apdu["INITIALIZE_FOR_LOAD_response"]
    assert _send(card, apdu["CREDIT_FOR_LOAD"]) == apdu["CREDIT_FOR_LOAD_response"]


def _replay_purchase(card: Any, psam: Psam, step: dict[str, Any], init: str, debit: str) -> None:
    apdu = step["apdu"]
    assert _send(card, apdu[init]) == apdu["INIT_response"]
    assert _send(psam, apdu["PSAM_MAC1_two_level"]) == apdu["PSAM_MAC1_response"]
    if "UPDATE_CAPP_DATA_CACHE" in apdu:
        assert _send(card, apdu["UPDATE_CAPP_DATA_CACHE"]) == "9000"
    assert _send(card, apdu[debit]) == apdu["DEBIT_response"]
    assert _send(psam, apdu["PSAM_VERIFY_MAC2"]) == "9000"
    assert _send(card, "00B201C417") == step["record_0018"] + "9000"
    assert _send(card, apdu["GET_TRANSACTION_PROVE"]) == step["mac2"] + step["tac"] + "9000"


@pytest.mark.parametrize("algorithm", ALGS)
def test_card_keys_are_diversified_exactly_as_the_spec_example(kit, algorithm):
    expected = kit.VECTORS[algorithm.value]["diversification"]
    for name in ("DLK", "DPK", "DTK"):
        key = alg.diversify_path(algorithm, kit.masters(algorithm)[name], [kit.ISSUER, kit.ASN])
        assert key.hex().upper() == expected[name]["two_level(issuer,card_asn)"]


@pytest.mark.parametrize("algorithm", ALGS)
def test_load_transcript_reproduced_by_card(kit, algorithm):
    section = kit.VECTORS[algorithm.value]
    card = _card_at_vector_state(kit, algorithm)
    _replay_load(card, section)
    assert _send(card, "805C000204") == section["load"]["apdu"]["GET_BALANCE_response_after"]
    assert _send(card, "00B201C417") == section["load"]["record_0018"] + "9000"
    proof = section["load"]["mac2"] + section["load"]["tac"]
    assert _send(card, section["load"]["apdu"]["GET_TRANSACTION_PROVE"]) == proof + "9000"


@pytest.mark.parametrize("algorithm", ALGS)
def test_purchase_and_capp_transcripts_reproduced_by_card_and_psam(kit, algorithm):
    section = kit.VECTORS[algorithm.value]
    card = _card_at_vector_state(kit, algorithm)
    _replay_load(card, section)
    psam = kit.make_psam(tts=0x103)
    _replay_purchase(card, psam, section["purchase"], "INITIALIZE_FOR_PURCHASE",
                     "DEBIT_FOR_PURCHASE")  # fmt: skip
    _replay_purchase(card, psam, section["capp_purchase"], "INITIALIZE_FOR_CAPP_PURCHASE",
                     "DEBIT_FOR_CAPP_PURCHASE")  # fmt: skip
    assert _send(card, "805C000204") == section["capp_purchase"]["balance_after"] + "9000"
    record = kit.VECTORS["inputs"]["capp_purchase"]["record"].upper()
    assert _send(card, "00B201D000") == record + "9000"


@pytest.mark.parametrize("algorithm", ALGS)
def test_one_level_psam_holding_city_keys_gives_the_same_mac1(kit, algorithm):
    city = {n: alg.diversify(algorithm, k, kit.ISSUER) for n, k in kit.masters(algorithm).items()}
    psam = Psam(psam_image({algorithm: city}, terminal=kit.TERMINAL, tts=0x103))
    apdu = kit.VECTORS[algorithm.value]["purchase"]["apdu"]
    assert _send(psam, apdu["PSAM_MAC1_one_level"]) == apdu["PSAM_MAC1_response"]


def test_retail_mac_secure_messaging_example_matches_the_spec(kit):
    example = kit.VECTORS["extra"]["retail_mac_example"]
    mac = alg.retail_mac(H(example["key"]), H(example["data"]), H(example["iv"]))
    assert mac.hex().upper() == example["mac"]
