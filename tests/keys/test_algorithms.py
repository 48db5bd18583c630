"""Contracts of the pure primitives: round trips, padding, batching, errors."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onecard.keys.algorithms import (
    Algorithm,
    des_ecb_decrypt,
    des_ecb_encrypt,
    diversify,
    diversify_many,
    diversify_path,
    ecb_decrypt,
    ecb_encrypt,
    invert,
    kcv,
    mac,
    mac_many,
    pad80,
    pboc_mac,
    sm4_ecb_decrypt,
    sm4_ecb_encrypt,
    tac_key,
    tdes_ecb_decrypt,
    tdes_ecb_encrypt,
    xor_bytes,
)
from onecard.keys.errors import InvalidInput, InvalidKeyLength, KeyServiceError

algs = st.sampled_from(list(Algorithm))
keys16 = st.binary(min_size=16, max_size=16)
factors = st.binary(min_size=8, max_size=8)


@given(st.binary(max_size=64), st.sampled_from([8, 16]))
def test_pad80_always_adds_80_and_reaches_a_block_multiple(data: bytes, block: int) -> None:
    padded = pad80(data, block)
    assert len(padded) % block == 0
    assert padded.startswith(data + b"\x80")
    assert padded[len(data) + 1 :] == bytes(len(padded) - len(data) - 1)
    assert len(padded) - len(data) <= block


def test_pad80_adds_a_whole_block_to_an_aligned_message() -> None:
    assert pad80(bytes(8), 8) == bytes(8) + b"\x80" + bytes(7)


@given(algs, keys16, st.integers(min_value=1, max_value=4))
def test_ecb_decrypt_inverts_encrypt(alg: Algorithm, key: bytes, blocks: int) -> None:
    data = bytes(range(alg.block_size * blocks))
    assert ecb_decrypt(alg, key, ecb_encrypt(alg, key, data)) == data


def test_named_ciphers_agree_with_the_dispatcher() -> None:
    k16, k8, blk = bytes(range(16)), bytes(range(8)), bytes(range(16))
    assert tdes_ecb_encrypt(k16, blk) == ecb_encrypt(Algorithm.TDES, k16, blk)
    assert tdes_ecb_decrypt(k16, tdes_ecb_encrypt(k16 + k16[:8], blk)) == blk
    assert des_ecb_encrypt(k8, blk) == tdes_ecb_encrypt(k8 * 3, blk)
    assert des_ecb_decrypt(k8, des_ecb_encrypt(k8, blk)) == blk
    assert sm4_ecb_decrypt(k16, sm4_ecb_encrypt(k16, blk)) == blk


def test_single_and_double_length_3des_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        des_ecb_encrypt(bytes(8), bytes(8))
        tdes_ecb_encrypt(bytes(16), bytes(8))


def test_two_key_3des_with_equal_halves_is_single_des() -> None:
    k = bytes.fromhex("0123456789ABCDEF")
    assert tdes_ecb_encrypt(k + k, bytes(8)) == des_ecb_encrypt(k, bytes(8))


@given(algs, keys16, st.lists(factors, max_size=6))
def test_diversify_many_equals_one_at_a_time(alg: Algorithm, key: bytes, fs: list[bytes]) -> None:
    assert diversify_many(alg, key, fs) == [diversify(alg, key, f) for f in fs]


@given(algs, keys16, st.lists(factors, max_size=3))
def test_diversify_path_applies_factors_highest_first(
    alg: Algorithm, key: bytes, fs: list[bytes]
) -> None:
    expected = key
    for f in fs:
        expected = diversify(alg, expected, f)
    assert diversify_path(alg, key, fs) == expected


@given(algs, keys16, st.lists(st.binary(max_size=40), max_size=5))
def test_mac_many_equals_mac_per_message(alg: Algorithm, key: bytes, msgs: list[bytes]) -> None:
    k = tac_key(alg, key)
    assert mac_many(alg, k, msgs) == [mac(alg, k, m) for m in msgs]


@given(st.binary(min_size=8, max_size=8), st.binary(max_size=40))
def test_pboc_mac_is_four_bytes_and_changes_with_the_iv(key: bytes, data: bytes) -> None:
    a = pboc_mac(key, data)
    assert len(a) == 4
    assert pboc_mac(key, data, iv=bytes(8), out_len=8)[:4] == a


@given(st.binary(max_size=32))
def test_invert_and_xor_are_involutions(data: bytes) -> None:
    assert invert(invert(data)) == data
    assert xor_bytes(xor_bytes(data, invert(data)), invert(data)) == data


def test_kcv_is_the_encrypted_zero_block_prefix() -> None:
    key = bytes(range(16))
    assert kcv(Algorithm.TDES, key) == tdes_ecb_encrypt(key, bytes(8))[:3]
    assert kcv(Algorithm.SM4, key) == sm4_ecb_encrypt(key, bytes(16))[:3]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: tdes_ecb_encrypt(bytes(8), bytes(8)), InvalidKeyLength),
        (lambda: sm4_ecb_encrypt(bytes(8), bytes(16)), InvalidKeyLength),
        (lambda: pboc_mac(bytes(16), b""), InvalidKeyLength),
        (lambda: des_ecb_encrypt(bytes(8), bytes(7)), InvalidInput),
        (lambda: diversify(Algorithm.SM4, bytes(16), bytes(7)), InvalidInput),
        (lambda: Algorithm.from_alg_id(0x09), InvalidInput),
        (lambda: pboc_mac(bytes(8), b"", iv=bytes(4)), InvalidInput),
    ],
)
def test_malformed_arguments_raise_key_service_errors(call: object, error: type) -> None:
    with pytest.raises(error) as info:
        call()  # type: ignore[operator]
    assert isinstance(info.value, KeyServiceError)
