"""What an ack says for the seqs stored, and what the device may delete because of it."""

import itertools

from hypothesis import given
from hypothesis import strategies as st

from onecard.device_agents.protocol.acks import (
    ack_covers,
    compute_ack,
    covered_ranges,
    merge_ranges,
    to_ranges,
)


def test_a_gap_is_reported_as_missing_and_later_seqs_are_still_covered():
    ack = compute_ack("abcd", [1, 2, 3, 5, 8, 9])

    assert (ack.acked_upto, ack.highest, ack.missing) == (3, 9, ((4, 4), (6, 7)))
    assert [s for s in range(1, 11) if ack_covers(ack, s)] == [1, 2, 3, 5, 8, 9]


def test_a_missing_first_record_leaves_nothing_contiguous():
    ack = compute_ack("abcd", [3, 4])

    assert (ack.acked_upto, ack.missing) == (0, ((1, 2),))


def test_ranges_the_device_declared_gone_close_the_gap():
    ack = compute_ack("abcd", [1, 2, 6], gone=[(3, 5)])

    assert (ack.acked_upto, ack.missing) == (6, ())


def test_too_many_gaps_lower_highest_so_nothing_unlisted_is_covered():
    ack = compute_ack("abcd", range(1, 100, 2), max_missing=3)

    assert ack.missing == ((2, 2), (4, 4), (6, 6))
    assert ack.highest == 7
    assert not ack_covers(ack, 8)


def test_nothing_stored_acks_nothing():
    ack = compute_ack("abcd", [])

    assert (ack.acked_upto, ack.highest, ack.missing) == (0, 0, ())


@given(st.sets(st.integers(1, 300), max_size=120), st.integers(1, 20))
def test_an_ack_covers_exactly_the_stored_seqs(stored, max_missing):
    ack = compute_ack("abcd", stored, max_missing=max_missing)
    covered = {s for s in range(1, 310) if ack_covers(ack, s)}

    assert covered <= stored
    assert covered == {s for s in stored if s <= ack.highest}
    assert set(range(1, ack.acked_upto + 1)) <= stored
    assert ack.acked_upto + 1 not in stored or (ack.acked_upto == 0 and 1 not in stored)
    assert {s for a, b in covered_ranges(ack) for s in range(a, b + 1)} == covered
    assert len(ack.missing) <= max_missing


@given(st.lists(st.tuples(st.integers(1, 50), st.integers(0, 10)), max_size=20))
def test_merged_ranges_hold_the_same_seqs(pairs):
    ranges = [(a, a + n) for a, n in pairs]

    merged = merge_ranges(ranges)

    assert {s for a, b in merged for s in range(a, b + 1)} == {
        s for a, b in ranges for s in range(a, b + 1)
    }
    assert all(b1 + 1 < a2 for (_, b1), (a2, _) in itertools.pairwise(merged))
    assert to_ranges({s for a, b in merged for s in range(a, b + 1)}) == merged


def test_an_ack_without_highest_covers_only_up_to_acked_upto():
    from onecard.device_agents.protocol.codec import decode
    from onecard.device_agents.protocol.topics import Topic

    ack = decode(Topic.ACK, b'{"v":1,"epoch":"abcd","acked_upto":3,"missing":[[5,6]]}')

    assert [s for s in range(1, 9) if ack_covers(ack, s)] == [1, 2, 3]
    assert covered_ranges(ack) == [(1, 3)]
