"""The spec's fixed worked example (§10.2) for 3DES and SM4, incl. the APDU transcripts' crypto."""

from __future__ import annotations

from typing import Any

import pytest

from onecard.keys import macdata as md
from onecard.keys.algorithms import (
    M1_KEY_A,
    M1_KEY_B,
    Algorithm,
    diversify,
    diversify_path,
    load_session_key,
    m1_sector_key,
    mac,
    pad80,
    purchase_session_key,
    retail_mac,
    tac_key,
)

H = bytes.fromhex
ALGS = [Algorithm.TDES, Algorithm.SM4]


def _hex(b: bytes) -> str:
    return b.hex().upper()


class Example:
    """Inputs and expected values of one algorithm's half of the JSON."""

    def __init__(self, vectors: dict[str, Any], alg: Algorithm) -> None:
        self.alg = alg
        self.inputs = vectors["inputs"]
        self.out = vectors[alg.value]
        masters = self.inputs["master_keys_3des" if alg is Algorithm.TDES else "master_keys_sm4"]
        self.masters = {name[3:]: H(v) for name, v in masters.items()}
        self.issuer = H(self.inputs["issuer_factor"])
        self.asn = H(self.inputs["card_asn"])
        self.terminal = H(self.inputs["terminal_id"])

    def card_key(self, name: str) -> bytes:
        return diversify_path(self.alg, self.masters[name], [self.issuer, self.asn])


@pytest.fixture(params=ALGS, ids=lambda a: a.value)
def ex(request: pytest.FixtureRequest, vectors: dict[str, Any]) -> Example:
    return Example(vectors, request.param)


@pytest.mark.parametrize("name", ["DLK", "DPK", "DTK"])
def test_diversification_one_issuer_and_two_levels_match_spec(ex: Example, name: str) -> None:
    row = ex.out["diversification"][name]
    master = ex.masters[name]
    assert _hex(diversify(ex.alg, master, ex.asn)) == row["one_level(card_asn)"]
    issuer = diversify(ex.alg, master, ex.issuer)
    assert _hex(issuer) == row["issuer_level(issuer_factor)"]
    assert _hex(diversify(ex.alg, issuer, ex.asn)) == row["two_level(issuer,card_asn)"]
    assert _hex(ex.card_key(name)) == row["two_level(issuer,card_asn)"]


def test_tac_key_matches_spec(ex: Example) -> None:
    assert _hex(tac_key(ex.alg, ex.card_key("DTK"))) == ex.out["tac_key"]


def test_load_session_key_mac1_mac2_tac_match_spec(ex: Example) -> None:
    ld, want = ex.inputs["load"], ex.out["load"]
    sk = load_session_key(ex.alg, ex.card_key("DLK"), H(ld["random"]), ld["online_counter"])
    assert _hex(sk) == want["session_key"]
    m1 = md.load_mac1_data(ld["balance_before"], ld["amount"], ex.terminal)
    assert _hex(m1) == want["mac1_input"]
    assert _hex(pad80(m1, 8 if ex.alg is Algorithm.TDES else 16)) == want["mac1_input_padded"]
    assert _hex(mac(ex.alg, sk, m1)) == want["mac1"]
    m2 = md.load_mac2_data(ld["amount"], ex.terminal, H(ld["date"]), H(ld["time"]))
    assert _hex(m2) == want["mac2_input"]
    assert _hex(mac(ex.alg, sk, m2)) == want["mac2"]
    new_balance = ld["balance_before"] + ld["amount"]
    tac_in = md.load_tac_data(
        new_balance, ld["online_counter"], ld["amount"], ex.terminal, H(ld["date"]), H(ld["time"])
    )
    assert _hex(tac_in) == want["tac_input"]
    assert _hex(mac(ex.alg, tac_key(ex.alg, ex.card_key("DTK")), tac_in)) == want["tac"]


def test_load_apdu_transcript_carries_the_computed_mac1_mac2_tac(ex: Example) -> None:
    want = ex.out["load"]
    apdu = want["apdu"]
    init_resp = H(apdu["INITIALIZE_FOR_LOAD_response"])
    # oldBalance(4) onlineCounter(2) keyVersion(1) algId(1) random(4) MAC1(4) SW
    assert init_resp[7] == ex.alg.alg_id
    assert Algorithm.from_alg_id(init_resp[7]) is ex.alg
    assert _hex(init_resp[12:16]) == want["mac1"]
    assert apdu["CREDIT_FOR_LOAD"][24:32] == want["mac2"]
    assert apdu["CREDIT_FOR_LOAD_response"] == want["tac"] + "9000"


@pytest.mark.parametrize("tx", ["purchase", "capp_purchase"])
def test_purchase_session_key_mac1_mac2_tac_match_spec(ex: Example, tx: str) -> None:
    p, want = ex.inputs[tx], ex.out[tx]
    sk = purchase_session_key(
        ex.alg, ex.card_key("DPK"), H(p["random"]), p["offline_counter"], p["terminal_serial"]
    )
    assert _hex(sk) == want["session_key"]
    ttype = int(p["type"], 16)
    date, time = H(p["date"]), H(p["time"])
    m1 = md.purchase_mac1_data(p["amount"], ex.terminal, date, time, ttype)
    assert _hex(m1) == want["mac1_input"]
    assert _hex(mac(ex.alg, sk, m1)) == want["mac1"]
    assert _hex(mac(ex.alg, sk, md.purchase_mac2_data(p["amount"]))) == want["mac2"]
    tac_in = md.purchase_tac_data(p["amount"], ex.terminal, p["terminal_serial"], date, time, ttype)
    assert _hex(tac_in) == want["tac_input"]
    assert _hex(mac(ex.alg, tac_key(ex.alg, ex.card_key("DTK")), tac_in)) == want["tac"]


def _psam_mac1(ex: Example, command: str) -> bytes:
    """What a PSAM does with an 80 70 command: factors come card first, derivation is reversed."""
    data = H(command)[5:-1]
    rnd, ctr, amount, ttype = data[0:4], data[4:6], data[6:10], data[10]
    date, time, alg_id, factors = data[11:15], data[15:18], data[19], data[20:]
    alg = Algorithm.from_alg_id(alg_id)
    card_first = [factors[i : i + 8] for i in range(0, len(factors), 8)]
    master = ex.masters["DPK"]
    if len(card_first) == 1:  # a local PSAM holds the issuer-level key
        master = diversify(alg, master, ex.issuer)
    dpk = diversify_path(alg, master, list(reversed(card_first)))
    tts = int(ex.inputs["purchase"]["terminal_serial"])
    return _psam_sign(alg, dpk, rnd, ctr, tts, amount, ttype, ex.terminal, date, time)


def _psam_sign(
    alg: Algorithm,
    dpk: bytes,
    rnd: bytes,
    ctr: bytes,
    tts: int,
    amount: bytes,
    ttype: int,
    terminal: bytes,
    date: bytes,
    time: bytes,
) -> bytes:
    sk = purchase_session_key(alg, dpk, rnd, ctr, tts)
    data = md.purchase_mac1_data(int.from_bytes(amount, "big"), terminal, date, time, ttype)
    return mac(alg, sk, data)


@pytest.mark.parametrize("form", ["PSAM_MAC1_one_level", "PSAM_MAC1_two_level"])
def test_psam_8070_transcript_yields_the_spec_mac1(ex: Example, form: str) -> None:
    apdu = ex.out["purchase"]["apdu"]
    mac1 = _psam_mac1(ex, apdu[form])
    assert _hex(mac1) == apdu["PSAM_MAC1_response"][8:16]


@pytest.mark.parametrize("tx", ["purchase", "capp_purchase"])
def test_debit_response_is_tac_then_mac2(ex: Example, tx: str) -> None:
    want = ex.out[tx]
    assert want["apdu"]["DEBIT_response"] == want["tac"] + want["mac2"] + "9000"
    debit = next(v for k, v in want["apdu"].items() if k.startswith("DEBIT_FOR"))
    assert debit[-10:-2] == want["mac1"]
    assert want["apdu"]["PSAM_VERIFY_MAC2"] == "8072000004" + want["mac2"]


@pytest.mark.parametrize("sector", ["1", "2", "15"])
def test_m1_sector_keys_match_platform_design_vectors(vectors: dict[str, Any], sector: str) -> None:
    design = vectors["inputs"]["m1_platform_design"]
    want = vectors["m1_platform_design_NOT_A_STANDARD"]["sectors"][sector]
    uid, app = H(design["uid"]), int(design["app_code"], 16)
    for alg, mk in ((Algorithm.TDES, design["mk_m1_3des"]), (Algorithm.SM4, design["mk_m1_sm4"])):
        for kt, tag in (("A", M1_KEY_A), ("B", M1_KEY_B)):
            got = m1_sector_key(alg, H(mk), uid, app, int(sector), tag)
            assert _hex(got) == want[f"key{kt}_{alg.value}"]


def test_retail_mac_matches_spec_example(vectors: dict[str, Any]) -> None:
    ex = vectors["extra"]["retail_mac_example"]
    assert _hex(retail_mac(H(ex["key"]), H(ex["data"]), H(ex["iv"]))) == ex["mac"]
    assert _hex(mac(Algorithm.TDES, H(ex["key"]), H(ex["data"]), H(ex["iv"]))) == ex["mac"]
