"""EF 0015 and EF 0016 of a campus purse card (epurse.md §4.2, §4.3), as the card centre
writes them at personalisation. Pure.

Campus cards use the MOHURD layout of EF 0015 under our own AID [D]: city code 0000 (one
diversification level), ASN at bytes 12–19, validity at 20–27, card type at 28. The emulator's
`device_agents.emulators.profiles.build_ef15` produces the same bytes.
"""

from __future__ import annotations

from typing import Final

EF0015_LEN: Final = 30
EF0016_LEN: Final = 55
CAMPUS_AID: Final = bytes.fromhex("F04F4E4543415244")  # "F0" + "ONECARD" [D]
CAMPUS_SCHEME: Final = 0x03


def campus_ef0015(
    asn: bytes, *, card_type: int = 0x01, start: bytes, expiry: bytes, city: bytes = bytes(2)
) -> bytes:
    """The 30-byte EF 0015 of a campus card; ``start``/``expiry`` are BCD YYYYMMDD."""
    if len(asn) != 8 or len(start) != 4 or len(expiry) != 4 or len(city) != 2:
        raise ValueError("campus EF 0015 needs an 8-byte ASN, 4-byte dates, 2-byte city code")
    head = bytes(2) + city + bytes(4) + b"\x01\x01" + bytes(2)
    image = head + asn + start + expiry + bytes((card_type, 0x00))
    assert len(image) == EF0015_LEN
    return image


def ef0016(name: str = "", id_number: str = "", id_type: int = 0, staff: int = 0) -> bytes:
    """EF 0016 cardholder data (55 bytes): flags, GBK name (20), ASCII id (32), id type."""
    name_bytes = name.encode("gbk", errors="replace")[:20].ljust(20, b"\x00")
    id_bytes = id_number.encode("ascii", errors="replace")[:32].ljust(32, b"\x00")
    return bytes((0x00, staff)) + name_bytes + id_bytes + bytes((id_type,))


def bcd_asn(number: int) -> bytes:
    """An 8-byte BCD application serial number (16 decimal digits)."""
    if not 0 <= number < 10**16:
        raise ValueError("an ASN has at most 16 decimal digits")
    return bytes.fromhex(f"{number:016d}")
