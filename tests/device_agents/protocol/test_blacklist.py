"""List encoding: small on the wire, exact after decoding, fast to look up on the device."""

import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onecard.device_agents.protocol.blacklist import (
    CARD_NO_BASE,
    HASHED_BASE,
    SnapshotAssembler,
    SortedKeySet,
    credential_key,
    decode_keys,
    encode_keys,
    snapshot_chunks,
)
from onecard.device_agents.protocol.codec import decode, encode
from onecard.device_agents.protocol.codes import CredentialKind, ErrorReason, ProtocolError
from onecard.device_agents.protocol.topics import Topic


@given(st.sets(st.integers(0, 2**63 - 1), max_size=300))
def test_any_key_set_survives_encoding(keys):
    assert list(decode_keys(encode_keys(keys))) == sorted(keys)


def test_a_million_card_uids_encode_small_and_look_up_fast():
    rng = random.Random(7)
    keys = set()
    while len(keys) < 1_000_000:
        keys.add(rng.getrandbits(32))

    started = time.perf_counter()
    chunks = snapshot_chunks("blacklist", 9, keys)
    encoded = time.perf_counter()
    assembler = SnapshotAssembler()
    results = [assembler.add(decode(Topic.LISTS, encode(c))) for c in chunks]
    lookup = SortedKeySet.from_sorted(results[-1])
    decoded = time.perf_counter()
    probes = [rng.getrandbits(32) for _ in range(100_000)]
    hits = sum(p in lookup for p in probes)
    looked = time.perf_counter()

    size = sum(len(c.data) for c in chunks) * 3 // 4
    print(
        f"\n1M random 32-bit UIDs: {size / 1e6:.2f} MB zdv1 in {len(chunks)} chunks; "
        f"encode {encoded - started:.2f} s, transfer+decode {decoded - encoded:.2f} s, "
        f"lookup {(looked - decoded) / len(probes) * 1e6:.2f} µs"
    )
    assert len(lookup) == 1_000_000
    assert all(k in lookup for k in list(keys)[:1000])
    assert hits == sum(p in keys for p in probes)
    assert size < 2_200_000
    assert results[:-1] == [None] * (len(chunks) - 1)


def test_a_sequential_card_number_list_is_about_a_byte_per_entry():
    keys = {CARD_NO_BASE + n for n in range(0, 20_000_000, 20)}

    assert len(encode_keys(keys)) < 1_000_000 * 0.1


def test_a_snapshot_with_a_wrong_hash_is_refused():
    chunks = snapshot_chunks("blacklist", 2, {1, 2, 3})
    bad = chunks[0].model_copy(update={"total_sha256": "0" * 64})

    with pytest.raises(ProtocolError) as caught:
        SnapshotAssembler().add(bad)

    assert caught.value.reason is ErrorReason.BAD_HASH


@pytest.mark.parametrize("data", [b"", b"not zlib", b"x\x9c\x03\x00\x00\x00\x00\x01"])
def test_corrupt_encodings_are_refused(data):
    with pytest.raises(ProtocolError):
        decode_keys(data)


@given(
    st.sets(st.integers(0, 10**6), max_size=200),
    st.sets(st.integers(0, 10**6), max_size=100),
    st.sets(st.integers(0, 10**6), max_size=100),
)
def test_deltas_keep_the_set_exact(start, add, remove):
    keys = SortedKeySet(start)

    keys.apply(add, remove)

    assert list(keys) == sorted((start | add) - remove)


def test_credential_keys_keep_uids_and_card_numbers_compact():
    assert credential_key(CredentialKind.UID, "04a1b2c3") == 0x04A1B2C3
    assert credential_key(CredentialKind.CARD_NO, "12345") == CARD_NO_BASE + 12345
    plate = credential_key(CredentialKind.PLATE, "京A12345")
    assert HASHED_BASE <= plate < 2**63
    assert plate == credential_key(CredentialKind.PLATE, " 京a12345 ")
