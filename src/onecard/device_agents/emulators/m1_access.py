"""MIFARE Classic access conditions: decoding the access bytes of a sector trailer.

Owns the NXP access-condition tables (data blocks and sector trailer) as pure functions, so
`m1` only asks "may key A/B do operation X on block Y".
"""

from __future__ import annotations

from typing import Literal

Op = Literal["read", "write", "increment", "decrement"]
KeyType = Literal["A", "B"]
_AB, _A, _B, _NEVER = frozenset("AB"), frozenset("A"), frozenset("B"), frozenset[str]()

# (C1, C2, C3) → allowed keys for read, write, increment, decrement/transfer/restore.
_DATA: dict[tuple[int, int, int], tuple[frozenset[str], ...]] = {
    (0, 0, 0): (_AB, _AB, _AB, _AB),
    (0, 1, 0): (_AB, _NEVER, _NEVER, _NEVER),
    (1, 0, 0): (_AB, _B, _NEVER, _NEVER),
    (1, 1, 0): (_AB, _B, _B, _AB),
    (0, 0, 1): (_AB, _NEVER, _NEVER, _AB),
    (0, 1, 1): (_B, _B, _NEVER, _NEVER),
    (1, 0, 1): (_B, _NEVER, _NEVER, _NEVER),
    (1, 1, 1): (_NEVER, _NEVER, _NEVER, _NEVER),
}
_OPS = {"read": 0, "write": 1, "increment": 2, "decrement": 3}

# Trailer (C1, C2, C3) → (write key A, read access bits, write access bits, read key B,
# write key B). Key A is never readable.
_TRAILER: dict[tuple[int, int, int], tuple[frozenset[str], ...]] = {
    (0, 0, 0): (_A, _A, _NEVER, _A, _A),
    (0, 1, 0): (_NEVER, _A, _NEVER, _A, _NEVER),
    (1, 0, 0): (_B, _AB, _NEVER, _NEVER, _B),
    (1, 1, 0): (_NEVER, _AB, _NEVER, _NEVER, _NEVER),
    (0, 0, 1): (_A, _A, _A, _A, _A),
    (0, 1, 1): (_B, _AB, _B, _NEVER, _B),
    (1, 0, 1): (_NEVER, _AB, _B, _NEVER, _NEVER),
    (1, 1, 1): (_NEVER, _AB, _NEVER, _NEVER, _NEVER),
}

TRANSPORT_ACCESS = bytes.fromhex("FF078069")  # all blocks 000, trailer 001


def decode_access(access: bytes) -> list[tuple[int, int, int]] | None:
    """(C1, C2, C3) for blocks 0-3 from access bytes 6-8, or None if the complements disagree."""
    b6, b7, b8 = access[0], access[1], access[2]
    c1, c2, c3 = b7 >> 4, b8 & 0x0F, b8 >> 4
    if (b6 & 0x0F) != (~c1 & 0x0F) or (b6 >> 4) != (~c2 & 0x0F) or (b7 & 0x0F) != (~c3 & 0x0F):
        return None
    return [((c1 >> i) & 1, (c2 >> i) & 1, (c3 >> i) & 1) for i in range(4)]


def encode_access(conditions: list[tuple[int, int, int]], gpb: int = 0x69) -> bytes:
    """Access bytes 6-9 for (C1, C2, C3) of blocks 0-3 and the general-purpose byte."""
    c1 = sum(c[0] << i for i, c in enumerate(conditions))
    c2 = sum(c[1] << i for i, c in enumerate(conditions))
    c3 = sum(c[2] << i for i, c in enumerate(conditions))
    b6 = ((~c2 & 0x0F) << 4) | (~c1 & 0x0F)
    b7 = (c1 << 4) | (~c3 & 0x0F)
    b8 = (c3 << 4) | c2
    return bytes((b6, b7, b8, gpb))


def data_allowed(condition: tuple[int, int, int], op: Op, key: KeyType) -> bool:
    return key in _DATA[condition][_OPS[op]]


def key_b_readable(trailer_condition: tuple[int, int, int]) -> bool:
    """Key B readable ⇒ it is data, not a key: authentication with it grants nothing."""
    return "A" in _TRAILER[trailer_condition][3]


def trailer_rights(condition: tuple[int, int, int]) -> tuple[frozenset[str], ...]:
    """(write key A, read access bits, write access bits, read key B, write key B)."""
    return _TRAILER[condition]
