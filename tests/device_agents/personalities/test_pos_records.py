"""The POS's key document and the ``canteen_sale`` record's MAC, device side."""

import json

import pytest

from onecard.device_agents.personalities.pos_records import (
    MAC_FIELDS,
    SALE_EVENT,
    PosKey,
    PosKeyError,
    mac_message,
    record_mac,
    sale_fields,
    sealed,
    unwrap_pos_key,
)
from onecard.device_agents.personalities.pos_rules import CanteenReason, Verdict
from onecard.keys import algorithms as alg
from onecard.keys.algorithms import Algorithm
from onecard.keys.terminals import terminal_mac

TRANSPORT = bytes(range(16))
POS_KEY = bytes(range(100, 116))
SALE = Verdict(True, CanteenReason.OK, list_fen=1200, discount_fen=0, amount_fen=1200,
               period="lunch")  # fmt: skip


def document(algorithm=Algorithm.SM4, *, transport=TRANSPORT, key=POS_KEY, name="RMK"):
    """What ``onecard canteen pos-key`` prints for a POS."""
    return {
        "device": "pos-a",
        "transport": {"version": 1, "kcv": alg.kcv(algorithm, transport).hex()},
        "keys": [
            {"name": name, "version": 3, "algorithm": algorithm.value,
             "wrapped": alg.ecb_encrypt(algorithm, transport, key).hex(),
             "kcv": alg.kcv(algorithm, key).hex()},
        ],
    }  # fmt: skip


@pytest.mark.parametrize("algorithm", [Algorithm.SM4, Algorithm.TDES])
def test_the_pos_unwraps_its_key_with_the_transport_key(algorithm):
    key = unwrap_pos_key(document(algorithm), TRANSPORT)

    assert (key.algorithm, key.version, key.key) == (algorithm, 3, POS_KEY)
    assert key.kcv() == alg.kcv(algorithm, POS_KEY)


def test_another_transport_key_is_refused_before_anything_is_unwrapped():
    with pytest.raises(PosKeyError, match="transport KCV"):
        unwrap_pos_key(document(), bytes(16))


def test_a_wrapped_key_that_does_not_match_its_kcv_is_refused():
    doc = document()
    doc["keys"][0]["kcv"] = "000000"

    with pytest.raises(PosKeyError, match="its KCV"):
        unwrap_pos_key(doc, TRANSPORT)


@pytest.mark.parametrize(
    "broken",
    [{"keys": []}, {"keys": [{"name": "TK"}]}, {"keys": "RMK"}, document(name="DPK")],
)
def test_a_document_without_one_record_mac_key_is_refused(broken):
    with pytest.raises(PosKeyError, match="exactly one RMK"):
        unwrap_pos_key(broken, TRANSPORT)


def test_key_errors_and_reprs_never_show_key_bytes():
    key = unwrap_pos_key(document(), TRANSPORT)
    with pytest.raises(PosKeyError) as refused:
        unwrap_pos_key(document(), POS_KEY)

    assert POS_KEY.hex() not in repr(key)
    assert POS_KEY.hex() not in str(refused.value)
    assert PosKey.from_text(key.to_text()) == key


def test_a_sale_record_is_maced_over_what_the_server_reads_from_it():
    key = PosKey(Algorithm.SM4, 3, POS_KEY)
    fields = sale_fields(SALE, credential={"kind": "uid", "value": "04a1b2c3"}, device_time=7)

    record = sealed(fields, key, device_id="pos-a", epoch="ep-1", seq=42)

    covered = {
        "device_id": "pos-a", "epoch": "ep-1", "seq": 42, "card_no": "04a1b2c3",
        "amount_fen": 1200, "list_fen": 1200, "device_time": 7, "period": "lunch",
    }  # fmt: skip
    assert set(covered) == set(MAC_FIELDS)
    assert (record["event"], record["amount"]) == (SALE_EVENT, 1200)
    assert record["extra"] == {"list_fen": 1200, "period": "lunch",
                               "mac": record_mac(Algorithm.SM4, POS_KEY, covered),
                               "key_version": 3}  # fmt: skip
    assert bytes.fromhex(record["extra"]["mac"]) == terminal_mac(
        Algorithm.SM4, POS_KEY, mac_message(covered)
    )


def test_the_mac_message_is_canonical_json_of_the_covered_fields_only():
    message = mac_message({"seq": 1, "device_id": "d", "ignored": True})

    assert json.loads(message) == dict.fromkeys(MAC_FIELDS) | {"seq": 1, "device_id": "d"}
    assert message.startswith(b'{"amount_fen":null,"card_no":null,')
