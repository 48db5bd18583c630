"""The C TAC verifier (`onecard.keys._tacbatch`) against the spec vectors and the Python path."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onecard.keys import _tacbatch
from onecard.keys.algorithms import Algorithm, diversify, diversify_path, mac, tac_key
from onecard.keys.errors import InvalidInput
from onecard.keys.hsm import KeyRef, TacCheck
from onecard.keys.softhsm import SoftHsm, split_key

H = bytes.fromhex
ALGS = [Algorithm.TDES, Algorithm.SM4]
TXS = ("load", "purchase", "capp_purchase")
LEVELS = (0, 1, 2)
ISSUER2 = H("3100FF0000000000")  # a second issuer factor for mixed-prefix batches


def _masters(vectors: dict[str, Any], alg: Algorithm) -> bytes:
    table = vectors["inputs"]["master_keys_3des" if alg is Algorithm.TDES else "master_keys_sm4"]
    return H(table["MK_DTK"])


def _ref(alg: Algorithm, levels: int) -> KeyRef:
    return KeyRef(3, "purse", "DTK", 10 * levels + (1 if alg is Algorithm.TDES else 2))


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory, vectors: dict[str, Any]) -> SoftHsm:
    """One SoftHsm per module holding the spec's DTK masters at 0, 1 and 2 levels."""
    store = SoftHsm(tmp_path_factory.mktemp("tacbatch") / "k.store", bytes(range(32)), create=True)
    for alg in ALGS:
        for levels in LEVELS:
            master = _masters(vectors, alg)
            store.import_components(_ref(alg, levels), alg, levels, split_key(alg, master, 2))
    return store


def _spec_records(vectors: dict[str, Any], alg: Algorithm) -> list[tuple[bytes, bytes]]:
    out = vectors[alg.value]
    return [(H(out[tx]["tac_input"]), H(out[tx]["tac"])) for tx in TXS]


# ------------------------------------------------------------------ direct: spec vectors
@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.value)
def test_spec_tacs_verify_two_levels_with_the_issuer_level_key(
    vectors: dict[str, Any], alg: Algorithm
) -> None:
    issuer = diversify(alg, _masters(vectors, alg), H(vectors["inputs"]["issuer_factor"]))
    asn = H(vectors["inputs"]["card_asn"])
    records = _spec_records(vectors, alg)
    got = _tacbatch.verify(
        alg.value, issuer, [asn] * 3, [d for d, _ in records], [t for _, t in records]
    )
    assert got == b"\x01\x01\x01"


@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.value)
def test_spec_tacs_verify_with_the_card_dtk_and_no_factors(
    vectors: dict[str, Any], alg: Algorithm
) -> None:
    card_dtk = H(vectors[alg.value]["diversification"]["DTK"]["two_level(issuer,card_asn)"])
    assert tac_key(alg, card_dtk).hex().upper() == vectors[alg.value]["tac_key"]
    records = _spec_records(vectors, alg)
    got = _tacbatch.verify(alg.value, card_dtk, None, [d for d, _ in records], [bytes(4)] * 3)
    assert got == bytes(3)
    got = _tacbatch.verify(
        alg.value, card_dtk, None, [d for d, _ in records], [t for _, t in records]
    )
    assert got == b"\x01\x01\x01"


@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.value)
def test_spec_tacs_with_one_flipped_bit_fail(vectors: dict[str, Any], alg: Algorithm) -> None:
    issuer = diversify(alg, _masters(vectors, alg), H(vectors["inputs"]["issuer_factor"]))
    asn = H(vectors["inputs"]["card_asn"])
    data, tac = _spec_records(vectors, alg)[1]
    flipped_tac = bytes([tac[0] ^ 0x01]) + tac[1:]
    flipped_data = data[:-1] + bytes([data[-1] ^ 0x80])
    other_card = bytes([asn[0] ^ 0x01]) + asn[1:]
    got = _tacbatch.verify(
        alg.value,
        issuer,
        [asn, asn, other_card, asn],
        [data, data, data, flipped_data],
        [tac, flipped_tac, tac, tac],
    )
    assert got == b"\x01\x00\x00\x00"


# ------------------------------------------------------------------ through SoftHsm
@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.value)
@pytest.mark.parametrize("levels", [1, 2])
def test_soft_hsm_verifies_spec_style_records_like_the_python_path(
    hsm: SoftHsm, vectors: dict[str, Any], alg: Algorithm, levels: int
) -> None:
    inputs = vectors["inputs"]
    factors = (H(inputs["issuer_factor"]), H(inputs["card_asn"]))[2 - levels :]
    card = diversify_path(alg, _masters(vectors, alg), factors)
    checks = [
        TacCheck(factors, d, mac(alg, tac_key(alg, card), d))
        for d, _ in _spec_records(vectors, alg)
    ]
    if levels == 2:  # the JSON's TACs are for the two-level card key
        assert [c.tac for c in checks] == [t for _, t in _spec_records(vectors, alg)]
    checks.append(TacCheck(factors, checks[0].data, bytes(4)))
    want = [True, True, True, False]
    assert hsm.verify_tacs(_ref(alg, levels), checks) == want
    assert hsm._verify_tacs_python(_ref(alg, levels), checks) == want


def _card_factors(levels: int, issuer: int, card: int) -> tuple[bytes, ...]:
    issuers = (H("2000FF0000000000"), ISSUER2)
    full = (issuers[issuer], (0x1000000000000000 + card).to_bytes(8, "big"))
    return full[2 - levels :]


record = st.tuples(
    st.integers(0, 1),  # issuer
    st.integers(0, 5),  # card (few cards: several records per card, in any order)
    st.binary(max_size=48),  # TAC input, block multiples included
    st.sampled_from(["ok", "tac", "data", "short"]),  # how the record is damaged
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ALGS), st.sampled_from(LEVELS), st.lists(record, max_size=30))
def test_random_batches_agree_with_the_python_path_and_the_truth(
    hsm: SoftHsm, vectors: dict[str, Any], alg: Algorithm, levels: int, batch: list[Any]
) -> None:
    master = _masters(vectors, alg)
    checks, want = [], []
    for issuer, card, data, damage in batch:
        factors = _card_factors(levels, issuer, card)
        tac = mac(alg, tac_key(alg, diversify_path(alg, master, factors)), data)
        if damage == "tac":
            tac = bytes([tac[0] ^ 0xFF]) + tac[1:]
        elif damage == "data":
            data = data + b"\x00"
        elif damage == "short":
            data = data[:-1] if data else b"\x80"
        checks.append(TacCheck(factors, data, tac))
        want.append(mac(alg, tac_key(alg, diversify_path(alg, master, factors)), data) == tac)
    got = hsm.verify_tacs(_ref(alg, levels), checks)
    assert got == want
    assert hsm._verify_tacs_python(_ref(alg, levels), checks) == want


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(ALGS),
    st.binary(min_size=16, max_size=16),
    st.lists(
        st.tuples(st.binary(min_size=8, max_size=8), st.binary(max_size=40), st.booleans()),
        max_size=20,
    ),
)
def test_random_keys_and_factors_agree_with_algorithms_mac(
    alg: Algorithm, issuer_key: bytes, batch: list[tuple[bytes, bytes, bool]]
) -> None:
    tacs, want = [], []
    for factor, data, good in batch:
        tac = mac(alg, tac_key(alg, diversify(alg, issuer_key, factor)), data)
        tacs.append(tac if good else bytes(4))
        want.append(1 if good or tac == bytes(4) else 0)
    got = _tacbatch.verify(
        alg.value, issuer_key, [f for f, _, _ in batch], [d for _, d, _ in batch], tacs
    )
    assert list(got) == want


# ------------------------------------------------------------------ edges and errors
@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.value)
def test_empty_batch(hsm: SoftHsm, alg: Algorithm) -> None:
    assert _tacbatch.verify(alg.value, bytes(16), [], [], []) == b""
    assert _tacbatch.verify(alg.value, bytes(16), None, [], []) == b""
    assert hsm.verify_tacs(_ref(alg, 2), []) == []


def test_bytes_like_inputs_are_accepted() -> None:
    key, factor, data = os.urandom(16), os.urandom(8), os.urandom(22)
    tac = mac(Algorithm.SM4, tac_key(Algorithm.SM4, diversify(Algorithm.SM4, key, factor)), data)
    got = _tacbatch.verify(
        "sm4", bytearray(key), [memoryview(factor)], [bytearray(data)], [memoryview(tac)]
    )
    assert got == b"\x01"


@pytest.mark.parametrize(
    ("key", "factors", "data", "tacs"),
    [
        (bytes(15), [bytes(8)], [b""], [bytes(4)]),  # key length
        (bytes(24), [bytes(8)], [b""], [bytes(4)]),
        (bytes(16), [bytes(7)], [b""], [bytes(4)]),  # factor length
        (bytes(16), [bytes(9)], [b""], [bytes(4)]),
        (bytes(16), [bytes(8)], [b""], [bytes(3)]),  # TAC length
        (bytes(16), [bytes(8)], [b""], [bytes(8)]),
        (bytes(16), [bytes(8)], [b"", b""], [bytes(4)]),  # sequence lengths differ
        (bytes(16), [bytes(8), bytes(8)], [b""], [bytes(4)]),
        (bytes(16), [], [b""], [bytes(4)]),
    ],
)
@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.value)
def test_bad_lengths_raise_value_error(
    alg: Algorithm, key: bytes, factors: list[bytes], data: list[bytes], tacs: list[bytes]
) -> None:
    with pytest.raises(ValueError, match=r"bytes|factors|tacs"):
        _tacbatch.verify(alg.value, key, factors, data, tacs)


def test_unknown_algorithm_and_wrong_types_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown algorithm"):
        _tacbatch.verify("aes", bytes(16), None, [], [])
    with pytest.raises(TypeError):
        _tacbatch.verify(0, bytes(16), None, [], [])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _tacbatch.verify("sm4", bytes(16), [bytes(8)], ["text"], [bytes(4)])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        _tacbatch.verify("sm4", bytes(16), 5, [], [])  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.value)
def test_soft_hsm_turns_a_bad_factor_or_tac_length_into_invalid_input(
    hsm: SoftHsm, alg: Algorithm
) -> None:
    issuer = H("2000FF0000000000")
    with pytest.raises(InvalidInput, match="factor"):
        hsm.verify_tacs(_ref(alg, 2), [TacCheck((issuer, bytes(7)), b"", bytes(4))])
    with pytest.raises(InvalidInput, match="tac"):
        hsm.verify_tacs(_ref(alg, 2), [TacCheck((issuer, bytes(8)), b"", bytes(5))])


@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.value)
def test_threads_verify_concurrently_with_their_own_contexts(alg: Algorithm) -> None:
    keys = [os.urandom(16) for _ in range(4)]
    batches = []
    for key in keys:
        factors = [os.urandom(8) for _ in range(500)]
        data = [os.urandom(22) for _ in factors]
        good = [
            mac(alg, tac_key(alg, diversify(alg, key, f)), d)
            for f, d in zip(factors, data, strict=True)
        ]
        tacs = [bytes(4) if i % 7 == 0 else t for i, t in enumerate(good)]
        want = bytes(g == t for g, t in zip(good, tacs, strict=True))
        batches.append((key, factors, data, tacs, want))
    errors: list[str] = []

    def work(n: int) -> None:
        key, factors, data, tacs, want = batches[n]
        for _ in range(20):
            if _tacbatch.verify(alg.value, key, factors, data, tacs) != want:
                errors.append(f"thread {n}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_time_blocks_reports_seconds() -> None:
    assert _tacbatch.time_blocks("3des", 1000) >= 0.0
    assert _tacbatch.time_blocks("sm4", 0) >= 0.0
    with pytest.raises(ValueError, match="count"):
        _tacbatch.time_blocks("sm4", -1)
