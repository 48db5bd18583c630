"""The exact byte strings that the card, PSAM and HSM MAC (spec epurse.md §6).

Pure builders; amounts and balances are integer fen, counters and serials integers, ``date``
BCD YYYYMMDD (4 bytes), ``time`` BCD hhmmss (3 bytes), ``terminal`` the 6-byte PSAM terminal
number T. Counters are the values INITIALIZE returned (before the card increments them).
"""

from __future__ import annotations

from typing import Final

from onecard.keys.errors import InvalidInput

TYPE_ED_LOAD: Final = 0x01
TYPE_LOAD: Final = 0x02
TYPE_PURCHASE: Final = 0x06
TYPE_CAPP_PURCHASE: Final = 0x09


def u32(value: int) -> bytes:
    """4-byte big-endian unsigned (amounts, balances, terminal serial)."""
    if not 0 <= value <= 0xFFFFFFFF:
        raise InvalidInput(f"{value} does not fit 4 bytes")
    return value.to_bytes(4, "big")


def u16(value: int) -> bytes:
    """2-byte big-endian unsigned (card counters)."""
    if not 0 <= value <= 0xFFFF:
        raise InvalidInput(f"{value} does not fit 2 bytes")
    return value.to_bytes(2, "big")


def _fixed(value: bytes, n: int, what: str) -> bytes:
    if len(value) != n:
        raise InvalidInput(f"{what} must be {n} bytes, got {len(value)}")
    return value


def _when(date: bytes, time: bytes) -> bytes:
    return _fixed(date, 4, "date") + _fixed(time, 3, "time")


def load_mac1_data(balance: int, amount: int, terminal: bytes, ttype: int = TYPE_LOAD) -> bytes:
    """Load MAC1: old balance(4) ‖ amount(4) ‖ type(1) ‖ T(6) — 15 bytes."""
    return u32(balance) + u32(amount) + bytes((ttype,)) + _fixed(terminal, 6, "terminal")


def load_mac2_data(
    amount: int, terminal: bytes, date: bytes, time: bytes, ttype: int = TYPE_LOAD
) -> bytes:
    """Load MAC2: amount(4) ‖ type(1) ‖ T(6) ‖ date(4) ‖ time(3) — 18 bytes."""
    return u32(amount) + bytes((ttype,)) + _fixed(terminal, 6, "terminal") + _when(date, time)


def load_tac_data(
    new_balance: int,
    online_counter: int,
    amount: int,
    terminal: bytes,
    date: bytes,
    time: bytes,
    ttype: int = TYPE_LOAD,
) -> bytes:
    """Load TAC: new balance(4) ‖ online ctr(2) ‖ amount(4) ‖ type ‖ T ‖ date ‖ time — 24 bytes."""
    head = u32(new_balance) + u16(online_counter) + u32(amount) + bytes((ttype,))
    return head + _fixed(terminal, 6, "terminal") + _when(date, time)


def purchase_mac1_data(
    amount: int, terminal: bytes, date: bytes, time: bytes, ttype: int = TYPE_PURCHASE
) -> bytes:
    """Purchase MAC1: amount(4) ‖ type(1) ‖ T(6) ‖ date(4) ‖ time(3) — 18 bytes."""
    return u32(amount) + bytes((ttype,)) + _fixed(terminal, 6, "terminal") + _when(date, time)


def purchase_mac2_data(amount: int) -> bytes:
    """Purchase MAC2: amount(4)."""
    return u32(amount)


def purchase_tac_data(
    amount: int,
    terminal: bytes,
    terminal_serial: int,
    date: bytes,
    time: bytes,
    ttype: int = TYPE_PURCHASE,
) -> bytes:
    """Purchase TAC: amount(4) ‖ type(1) ‖ T(6) ‖ TTS(4) ‖ date(4) ‖ time(3) — 22 bytes."""
    head = u32(amount) + bytes((ttype,)) + _fixed(terminal, 6, "terminal")
    return head + u32(terminal_serial) + _when(date, time)
