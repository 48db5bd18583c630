"""APDU framing for the emulators: command parsing (ISO 7816-4 short APDUs) and status words.

Owns the closed vocabulary of status words the card and PSAM emulators answer (epurse.md §9.2)
and the one parser both emulators use, so that a malformed APDU becomes a status word instead of
an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class SW(IntEnum):
    """Status words of epurse.md §9.2 (plus 6C xx style codes built by helpers)."""

    OK = 0x9000
    MAC_INVALID = 0x9302
    APP_LOCKED = 0x9303
    INSUFFICIENT_BALANCE = 0x9401
    OUT_OF_RANGE = 0x9402
    KEY_INDEX_UNSUPPORTED = 0x9403
    PROOF_UNAVAILABLE = 0x9406
    WRONG_LENGTH = 0x6700
    SECURITY_NOT_SATISFIED = 0x6982
    AUTH_BLOCKED = 0x6983
    DATA_INVALID = 0x6984
    SM_MAC_INCORRECT = 0x6988
    CONDITIONS_NOT_SATISFIED = 0x6985
    COMMAND_NOT_ALLOWED = 0x6986
    FUNCTION_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82
    RECORD_NOT_FOUND = 0x6A83
    WRONG_P1P2 = 0x6A86
    WRONG_DATA = 0x6A80
    WRONG_OFFSET = 0x6B00
    KEY_NOT_FOUND = 0x6A88
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    UNKNOWN_ERROR = 0x6F00

    def bytes(self) -> bytes:
        return self.value.to_bytes(2, "big")


def pin_retries_sw(tries_left: int) -> bytes:
    """``63 Cx``: wrong PIN, x tries left."""
    return bytes([0x63, 0xC0 | (tries_left & 0x0F)])


class ApduError(Exception):
    """Raised inside a command handler to answer a status word; never leaves an emulator."""

    def __init__(self, sw: SW | bytes) -> None:
        self.sw = sw.bytes() if isinstance(sw, SW) else sw
        super().__init__(self.sw.hex().upper())


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed short command APDU. ``le`` is None when absent (case 1 and 3)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int | None

    @property
    def header(self) -> bytes:
        return bytes((self.cla, self.ins, self.p1, self.p2))


def parse_command(apdu: bytes) -> Command:
    """Parse a short APDU (cases 1-4). Raises ApduError(67 00) when the lengths disagree.

    Extended-length APDUs are not used by the purse and answer 67 00.
    """
    if len(apdu) < 4:
        raise ApduError(SW.WRONG_LENGTH)
    cla, ins, p1, p2 = apdu[:4]
    body = apdu[4:]
    if not body:
        return Command(cla, ins, p1, p2, b"", None)
    if len(body) == 1:
        return Command(cla, ins, p1, p2, b"", body[0] or 256)
    lc = body[0]
    if lc == 0 or len(body) not in (1 + lc, 2 + lc):
        raise ApduError(SW.WRONG_LENGTH)
    le = (body[1 + lc] or 256) if len(body) == 2 + lc else None
    return Command(cla, ins, p1, p2, body[1 : 1 + lc], le)


def require_length(cmd: Command, *allowed: int) -> None:
    """Answer 67 00 unless the command data has one of the allowed lengths."""
    if len(cmd.data) not in allowed:
        raise ApduError(SW.WRONG_LENGTH)


def require_p1p2(cmd: Command, p1: int, p2: int) -> None:
    """Answer 6A 86 unless P1 P2 are exactly as given."""
    if (cmd.p1, cmd.p2) != (p1, p2):
        raise ApduError(SW.WRONG_P1P2)


def ok(data: bytes = b"") -> bytes:
    """Response data followed by 90 00."""
    return data + b"\x90\x00"
