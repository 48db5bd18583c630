"""The clearing record a terminal uploads for every purse transaction (epurse.md §12).

Owns the 80-byte binary layout (big-endian, CRC-32 in the last 4 bytes), its parse, and the
rebuild of the TAC input (§6) and diversification factors a verifier needs. Pure: the terminal
builds these records and the platform's clearing verifier parses them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final

from onecard.keys import macdata

RECORD_LEN: Final = 80
FORMAT_VERSION: Final = 0x01
MAC2_VERIFIED: Final = 0x00
MAC2_RECOVERED: Final = 0x01
MAC2_NOT_VERIFIED: Final = 0x02
KIND_LOAD: Final = "load"
KIND_PURCHASE: Final = "purchase"


@dataclass(frozen=True, slots=True)
class ClearingRecord:
    """One uploaded transaction. ``asn`` is 10 bytes (8-byte ASNs left-padded with 00)."""

    scheme: int
    alg_id: int
    key_version: int
    key_index: int
    issuer_factor: bytes | None
    asn: bytes
    card_type: int
    ttype: int
    amount: int
    balance_before: int
    counter: int
    terminal: bytes
    serial: int
    date: bytes
    time: bytes
    tac: bytes
    mac2_status: int
    capp_record_id: int = 0
    opaque: bytes = bytes(8)

    @property
    def kind(self) -> str:
        """Which card counter the record used: "load" (online) or "purchase" (offline)."""
        return KIND_LOAD if self.ttype == macdata.TYPE_LOAD else KIND_PURCHASE

    @property
    def card_factor(self) -> bytes:
        """The 8-byte card diversification factor: the rightmost 8 bytes of the ASN."""
        return self.asn[-8:]

    @property
    def balance_after(self) -> int:
        """The card balance after the transaction (loads add, purchases subtract)."""
        sign = 1 if self.ttype == macdata.TYPE_LOAD else -1
        return self.balance_before + sign * self.amount

    def to_bytes(self) -> bytes:
        """The 80-byte upload record; bytes 76-79 are CRC-32 of bytes 0-75."""
        head = bytes((FORMAT_VERSION, self.scheme, self.alg_id, self.key_version, self.key_index))
        ids = (self.issuer_factor or bytes(8)) + self.asn.rjust(10, b"\x00")
        money = bytes((self.card_type, self.ttype)) + _u32(self.amount) + _u32(self.balance_before)
        where = self.counter.to_bytes(2, "big") + self.terminal + _u32(self.serial)
        tail = self.date + self.time + self.tac + bytes((self.mac2_status, self.capp_record_id))
        body = head + ids + money + where + tail + self.opaque + bytes(10)
        return body + _u32(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, raw: bytes) -> ClearingRecord:
        """Parse an upload record. Raises ValueError on a bad length, version or checksum."""
        if len(raw) != RECORD_LEN or raw[0] != FORMAT_VERSION:
            raise ValueError("not a version-01 clearing record")
        if zlib.crc32(raw[:76]) != int.from_bytes(raw[76:], "big"):
            raise ValueError("clearing record checksum mismatch")
        issuer = raw[5:13]
        return cls(
            scheme=raw[1], alg_id=raw[2], key_version=raw[3], key_index=raw[4],
            issuer_factor=issuer if any(issuer) else None, asn=raw[13:23], card_type=raw[23],
            ttype=raw[24], amount=_int(raw[25:29]), balance_before=_int(raw[29:33]),
            counter=_int(raw[33:35]), terminal=raw[35:41], serial=_int(raw[41:45]),
            date=raw[45:49], time=raw[49:52], tac=raw[52:56], mac2_status=raw[56],
            capp_record_id=raw[57], opaque=raw[58:66],
        )  # fmt: skip

    def tac_data(self) -> bytes:
        """The §6 TAC input this record's TAC must be the MAC of."""
        if self.ttype == macdata.TYPE_LOAD:
            return macdata.load_tac_data(self.balance_after, self.counter, self.amount,
                                         self.terminal, self.date, self.time)  # fmt: skip
        return macdata.purchase_tac_data(
            self.amount, self.terminal, self.serial, self.date, self.time, self.ttype
        )

    def card_factors(self) -> list[bytes]:
        """Diversification factors card first (as PSAM `80 1A` wants them)."""
        card = self.card_factor
        return [card, self.issuer_factor] if self.issuer_factor else [card]

    def key_factors(self) -> tuple[bytes, ...]:
        """Diversification factors highest level first, card last (as the HSM wants them)."""
        return tuple(self.card_factors()[::-1])


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def _int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")
