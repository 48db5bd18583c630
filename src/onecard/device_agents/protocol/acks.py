"""Exactly-once bookkeeping, pure: what an ack says given the seqs stored, and which seqs an
ack covers. Both sides use these: the platform to build ``down/ack``, the device to decide what
it may delete and what to resend.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

from onecard.device_agents.protocol.messages import Ack

SeqRange = tuple[int, int]


def to_ranges(seqs: Iterable[int]) -> list[SeqRange]:
    """Sorted, merged inclusive ranges of the given seqs: ``{1,2,3,7}`` → ``[(1,3),(7,7)]``."""
    out: list[SeqRange] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def merge_ranges(ranges: Iterable[SeqRange]) -> list[SeqRange]:
    """Sort and merge overlapping or adjacent inclusive ranges."""
    out: list[SeqRange] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


def compute_ack(
    epoch: str,
    stored: Iterable[int],
    *,
    gone: Iterable[SeqRange] = (),
    max_missing: int = 1000,
) -> Ack:
    """The ack for ``epoch`` given every seq stored (and ranges the device declared gone).

    ``acked_upto`` is the highest seq such that every seq from 1 to it is stored or gone;
    ``missing`` are the gaps above it, up to ``highest`` (the highest stored seq), neither stored
    nor gone. At most ``max_missing`` ranges are listed (the lowest first); ``highest`` is then
    lowered so that the ack never covers a seq it did not list as missing.
    """
    held = merge_ranges([*to_ranges(stored), *gone])
    highest = held[-1][1] if held else 0
    acked_upto = held[0][1] if held and held[0][0] == 1 else 0
    edges = [(0, 0), *held]
    gaps = [(a[1] + 1, b[0] - 1) for a, b in pairwise(edges) if b[0] > a[1] + 1]
    if len(gaps) > max_missing:
        highest = gaps[max_missing][0] - 1
        gaps = gaps[:max_missing]
    return Ack(epoch=epoch, acked_upto=acked_upto, highest=highest, missing=tuple(gaps))


def ack_covers(ack: Ack, seq: int) -> bool:
    """True if ``ack`` says the platform holds ``seq`` (the device may delete it)."""
    if seq <= ack.acked_upto:
        return True
    if seq > ack.upper:
        return False
    return not any(first <= seq <= last for first, last in ack.missing)


def covered_ranges(ack: Ack) -> list[SeqRange]:
    """Every seq ``ack`` covers, as inclusive ranges (for a ranged ``DELETE``)."""
    out: list[SeqRange] = [(1, ack.acked_upto)] if ack.acked_upto else []
    cursor = ack.acked_upto + 1
    for first, last in sorted(ack.missing):
        if first > ack.upper:
            break
        if first > cursor:
            out.append((cursor, first - 1))
        cursor = last + 1
    if cursor <= ack.upper:
        out.append((cursor, ack.upper))
    return merge_ranges(out)
