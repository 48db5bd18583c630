"""Command APDU builders and response parsers for the purse (epurse.md §5, §8), terminal side.

Owns the byte layouts a terminal sends and the frozen values it reads back. Pure: no channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TYPE_LOAD, TYPE_PURCHASE, TYPE_CAPP = 0x02, 0x06, 0x09


def _apdu(header: str, data: bytes = b"", le: int | None = None) -> bytes:
    body = bytes((len(data),)) + data if data else b""
    return bytes.fromhex(header) + body + (bytes((le,)) if le is not None else b"")


def select_aid(aid: bytes) -> bytes:
    return _apdu("00A40400", aid, 0x00)


def select_fid(fid: bytes) -> bytes:
    return _apdu("00A40000", fid)


def read_binary_sfi(sfi: int, length: int, offset: int = 0) -> bytes:
    return bytes((0x00, 0xB0, 0x80 | sfi, offset, length))


def read_record(sfi: int, number: int, by_id: bool = False) -> bytes:
    return bytes((0x00, 0xB2, number, (sfi << 3) | (0 if by_id else 4), 0x00))


def verify_pin(pin: bytes) -> bytes:
    return _apdu("00200000", pin)


def initialize(ttype: int, key_index: int, amount: int, terminal: bytes) -> bytes:
    """INITIALIZE FOR LOAD (02) / PURCHASE (06) / CAPP PURCHASE (09)."""
    p1 = {TYPE_LOAD: 0x00, TYPE_PURCHASE: 0x01, TYPE_CAPP: 0x03}[ttype]
    le = 0x10 if ttype == TYPE_LOAD else 0x0F
    data = bytes((key_index,)) + amount.to_bytes(4, "big") + terminal
    return _apdu(f"8050{p1:02X}02", data, le)


def credit_for_load(date: bytes, time: bytes, mac2: bytes) -> bytes:
    return _apdu("80520000", date + time + mac2, 0x04)


def debit_for_purchase(tts: int, date: bytes, time: bytes, mac1: bytes) -> bytes:
    return _apdu("80540100", tts.to_bytes(4, "big") + date + time + mac1, 0x08)


def update_capp_data_cache(sfi: int, record: bytes) -> bytes:
    return bytes((0x80, 0xDC, record[0], sfi << 3, len(record))) + record


def get_balance() -> bytes:
    return bytes.fromhex("805C000204")


def get_transaction_prove(ttype: int, counter: int) -> bytes:
    return _apdu(f"805A00{ttype:02X}", counter.to_bytes(2, "big"), 0x08)


def psam_mac1(init: InitPurchase, amount: int, ttype: int, when: bytes, factors: list[bytes]
              ) -> bytes:  # fmt: skip
    """PSAM `80 70`: factors card first (ASN, then issuer factor for two levels)."""
    head = init.rnd + init.counter.to_bytes(2, "big") + amount.to_bytes(4, "big")
    data = head + bytes((ttype,)) + when + bytes((init.key_version, init.alg_id))
    return _apdu("80700000", data + b"".join(factors), 0x08)


def psam_verify_mac2(mac2: bytes) -> bytes:
    return _apdu("80720000", mac2)


@dataclass(frozen=True, slots=True)
class InitLoad:
    """INITIALIZE FOR LOAD response (§5.2)."""

    balance: int
    counter: int
    key_version: int
    alg_id: int
    rnd: bytes = field(repr=False)
    mac1: bytes

    @classmethod
    def parse(cls, data: bytes) -> InitLoad:
        return cls(_u(data[0:4]), _u(data[4:6]), data[6], data[7], data[8:12], data[12:16])


@dataclass(frozen=True, slots=True)
class InitPurchase:
    """INITIALIZE FOR (CAPP) PURCHASE response (§5.4)."""

    balance: int
    counter: int
    overdraft: int
    key_version: int
    alg_id: int
    rnd: bytes = field(repr=False)

    @classmethod
    def parse(cls, data: bytes) -> InitPurchase:
        return cls(_u(data[0:4]), _u(data[4:6]), _u(data[6:9]), data[9], data[10], data[11:15])


@dataclass(frozen=True, slots=True)
class Record0018:
    """One transaction detail record (§4.4)."""

    counter: int
    amount: int
    ttype: int
    terminal: bytes
    date: bytes
    time: bytes

    @classmethod
    def parse(cls, data: bytes) -> Record0018:
        return cls(_u(data[0:2]), _u(data[5:9]), data[9], data[10:16], data[16:20], data[20:23])


def _u(data: bytes) -> int:
    return int.from_bytes(data, "big")
