"""Emulated MIFARE Classic 1K/4K ("M1") card with platform-diversified sector keys (§11).

Owns blocks, sector trailers, key A/B authentication, access conditions, value blocks with
increment / decrement / restore / transfer, and a PC/SC part-3 pseudo-APDU front (`FF CA`,
`FF 82`, `FF 86`, `FF B0`, `FF D6`, and the ACS-style `FF D7`/`FF B1` value commands) so the
same card can sit in a vpcd reader. Crypto1 and the anticollision layer are not emulated: a
reader that presents the right key authenticates.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from onecard.device_agents.emulators.apdu import SW, ApduError
from onecard.device_agents.emulators.m1_access import (
    TRANSPORT_ACCESS,
    KeyType,
    Op,
    data_allowed,
    decode_access,
    encode_access,
    key_b_readable,
    trailer_rights,
)
from onecard.keys import algorithms as alg
from onecard.keys.algorithms import Algorithm

BLOCK = 16
DEFAULT_KEY = bytes.fromhex("FFFFFFFFFFFF")
# Purse sector: data blocks 110 (read A|B, write B, increment B, decrement A|B), trailer 011.
WALLET_ACCESS = encode_access([(1, 1, 0), (1, 1, 0), (1, 1, 0), (0, 1, 1)])


class M1Error(Exception):
    """An M1 operation the card refuses (not authenticated, access denied, not a value block)."""


@dataclass(frozen=True, slots=True)
class SectorKeys:
    """Key A and key B of one sector (6 bytes each)."""

    key_a: bytes
    key_b: bytes


def value_block(value: int, address: int) -> bytes:
    """Value-block image: v, ~v, v (4-byte little-endian signed) and addr, ~addr, addr, ~addr."""
    v = value.to_bytes(4, "little", signed=True)
    inv = bytes(b ^ 0xFF for b in v)
    return v + inv + v + bytes((address, address ^ 0xFF, address, address ^ 0xFF))


def parse_value_block(data: bytes) -> int | None:
    """The value of a well-formed value block, else None."""
    v, inv, v2 = data[0:4], data[4:8], data[8:12]
    a = data[12:16]
    if v != v2 or bytes(b ^ 0xFF for b in v) != inv or a[0] != a[2] or a[1] != a[3]:
        return None
    if a[0] ^ 0xFF != a[1]:
        return None
    return int.from_bytes(v, "little", signed=True)


class M1Card:
    """A MIFARE Classic card: ``sectors`` of 4 blocks (1K = 16 sectors)."""

    def __init__(self, uid: bytes, sectors: int = 16) -> None:
        if len(uid) not in (4, 7):
            raise ValueError("UID must be 4 or 7 bytes")
        self.uid = uid
        self.sectors = sectors
        trailer = DEFAULT_KEY + TRANSPORT_ACCESS + DEFAULT_KEY
        self.blocks = [bytearray(BLOCK) for _ in range(sectors * 4)]
        for s in range(sectors):
            self.blocks[s * 4 + 3][:] = trailer
        self.blocks[0][:] = (uid + bytes(BLOCK))[:BLOCK]
        self._auth: tuple[int, KeyType] | None = None
        self._transfer: int | None = None
        self._key_slots: dict[int, bytes] = {}

    # -- authentication ----------------------------------------------------------------------
    def authenticate(self, block: int, key_type: KeyType, key: bytes) -> bool:
        """Authenticate the sector of ``block``; a wrong key drops any earlier authentication."""
        sector = self._sector(block)
        trailer = self.blocks[sector * 4 + 3]
        stored = bytes(trailer[0:6] if key_type == "A" else trailer[10:16])
        self._auth = (sector, key_type) if hmac.compare_digest(stored, key) else None
        self._transfer = None
        return self._auth is not None

    def halt(self) -> None:
        self._auth, self._transfer = None, None

    # -- block access ------------------------------------------------------------------------
    def read(self, block: int) -> bytes:
        if self._is_trailer(block):
            return self._read_trailer(block)
        self._require(block, "read")
        return bytes(self.blocks[block])

    def write(self, block: int, data: bytes) -> None:
        if len(data) != BLOCK:
            raise M1Error("a block is 16 bytes")
        if block == 0:
            raise M1Error("block 0 (manufacturer) is read-only")
        if self._is_trailer(block):
            self._write_trailer(block, data)
        else:
            self._require(block, "write")
            self.blocks[block][:] = data

    def increment(self, block: int, amount: int) -> None:
        self._value_op(block, "increment", amount)

    def decrement(self, block: int, amount: int) -> None:
        self._value_op(block, "decrement", -amount)

    def restore(self, block: int) -> None:
        self._value_op(block, "decrement", 0)

    def transfer(self, block: int) -> None:
        """Write the transfer buffer into a block of the authenticated sector."""
        self._require(block, "decrement")
        if self._transfer is None:
            raise M1Error("transfer buffer empty")
        self.blocks[block][:] = value_block(self._transfer, block)
        self._transfer = None

    def value(self, block: int) -> int:
        found = parse_value_block(self.read(block))
        if found is None:
            raise M1Error("not a value block")
        return found

    def _value_op(self, block: int, op: Op, delta: int) -> None:
        if amount_out_of_range(delta):
            raise M1Error("value operand out of range")
        self._require(block, op)
        current = parse_value_block(bytes(self.blocks[block]))
        if current is None:
            raise M1Error("not a value block")
        result = current + delta
        if amount_out_of_range(result):
            raise M1Error("value overflow")
        self._transfer = result

    # -- trailers ----------------------------------------------------------------------------
    def _read_trailer(self, block: int) -> bytes:
        condition = self._trailer_condition(self._sector(block))
        key_type = self._authenticated(block)
        _, read_bits, _, read_b, _ = trailer_rights(condition)
        trailer = self.blocks[block]
        access = bytes(trailer[6:10]) if key_type in read_bits else bytes(4)
        key_b = bytes(trailer[10:16]) if key_type in read_b else bytes(6)
        return bytes(6) + access + key_b

    def _write_trailer(self, block: int, data: bytes) -> None:
        condition = self._trailer_condition(self._sector(block))
        key_type = self._authenticated(block)
        write_a, _, write_bits, _, write_b = trailer_rights(condition)
        if decode_access(data[6:9]) is None:
            raise M1Error("inconsistent access bits (would lock the sector)")
        trailer = self.blocks[block]
        new = bytearray(trailer)
        if key_type in write_a:
            new[0:6] = data[0:6]
        if key_type in write_bits:
            new[6:10] = data[6:10]
        if key_type in write_b:
            new[10:16] = data[10:16]
        if new == trailer and data != bytes(trailer):
            raise M1Error("access denied")
        self.blocks[block][:] = new

    # -- helpers -----------------------------------------------------------------------------
    def _sector(self, block: int) -> int:
        if not 0 <= block < len(self.blocks):
            raise M1Error("no such block")
        return block // 4

    def _is_trailer(self, block: int) -> bool:
        return self._sector(block) >= 0 and block % 4 == 3

    def _authenticated(self, block: int) -> KeyType:
        if self._auth is None or self._auth[0] != self._sector(block):
            raise M1Error("sector not authenticated")
        return self._auth[1]

    def _trailer_condition(self, sector: int) -> tuple[int, int, int]:
        conditions = decode_access(bytes(self.blocks[sector * 4 + 3][6:9]))
        if conditions is None:
            raise M1Error("sector access bits are corrupt")
        return conditions[3]

    def _require(self, block: int, op: Op) -> None:
        key_type = self._authenticated(block)
        sector = self._sector(block)
        conditions = decode_access(bytes(self.blocks[sector * 4 + 3][6:9]))
        if conditions is None:
            raise M1Error("sector access bits are corrupt")
        if key_type == "B" and key_b_readable(conditions[3]):
            raise M1Error("key B is readable, so it grants no access")
        if not data_allowed(conditions[block % 4], op, key_type):
            raise M1Error(f"{op} denied for key {key_type}")

    # -- PC/SC part 3 front ------------------------------------------------------------------
    def process_apdu(self, apdu: bytes) -> bytes:
        """Answer a PC/SC pseudo-APDU; every failure is a status word (63 00 = operation failed)."""
        from onecard.device_agents.emulators.m1_apdu import dispatch

        try:
            return dispatch(self, bytes(apdu))
        except ApduError as err:
            return err.sw
        except M1Error:
            return b"\x63\x00"
        except Exception:
            return SW.UNKNOWN_ERROR.bytes()

    def load_key(self, slot: int, key: bytes) -> None:
        self._key_slots[slot] = key

    def slot_key(self, slot: int) -> bytes:
        key = self._key_slots.get(slot)
        if key is None:
            raise M1Error("no key in slot")
        return key


def amount_out_of_range(value: int) -> bool:
    return not -(2**31) <= value < 2**31


def personalise_m1(
    card: M1Card,
    *,
    algorithm: Algorithm,
    m1_master: bytes,
    app_code: int,
    sectors: Mapping[int, int],
    access: bytes = WALLET_ACCESS,
) -> dict[int, SectorKeys]:
    """Give each listed sector its §11 platform keys (per UID, application and sector) and
    ``access``; ``sectors`` maps sector → initial value of its first block (a value block).
    Assumes transport trailers (key A = FF…FF). Returns the keys for the caller's SAM image."""
    installed: dict[int, SectorKeys] = {}
    for sector, initial in sectors.items():
        keys = m1_sector_keys(algorithm, m1_master, card.uid, app_code, sector)
        first, trailer = sector * 4 + (1 if sector == 0 else 0), sector * 4 + 3
        card.authenticate(trailer, "A", DEFAULT_KEY)
        card.write(first, value_block(initial, first))
        card.write(trailer, keys.key_a + access + keys.key_b)
        installed[sector] = keys
    card.halt()
    return installed


def m1_sector_keys(
    algorithm: Algorithm, m1_master: bytes, uid: bytes, app_code: int, sector: int
) -> SectorKeys:
    """Key A and key B of one sector (§11 platform design)."""
    key_a = alg.m1_sector_key(algorithm, m1_master, uid, app_code, sector, alg.M1_KEY_A)
    key_b = alg.m1_sector_key(algorithm, m1_master, uid, app_code, sector, alg.M1_KEY_B)
    return SectorKeys(key_a, key_b)
