"""Card application profiles: MOHURD (住建部), MOT (交通部) and campus, per epurse.md §4 and §13.

Owns where each profile keeps its AID, ASN, issuer data and card type in EF 0015, and how the
diversification factors are read back from an EF 0015 image, so that the personalisation code,
the emulator and the terminal agree on one rule.
"""

from __future__ import annotations

from dataclasses import dataclass

EF15_LEN = 30
EF16_LEN = 55


@dataclass(frozen=True, slots=True)
class Profile:
    """Layout facts of one card application profile."""

    name: str
    scheme: int  # clearing record "scheme" byte (§12)
    aid: bytes
    fid: bytes
    asn_offset: int
    asn_len: int
    card_type_offset: int

    def asn(self, ef15: bytes) -> bytes:
        """The full application serial number as stored (8 or 10 bytes)."""
        return ef15[self.asn_offset : self.asn_offset + self.asn_len]

    def card_factor(self, ef15: bytes) -> bytes:
        """8-byte card diversification factor: the ASN, rightmost 8 bytes for MOT [A]."""
        return self.asn(ef15)[-8:]

    def card_type(self, ef15: bytes) -> int:
        return ef15[self.card_type_offset]

    def issuer_factor(self, ef15: bytes) -> bytes | None:
        """Second-level factor read from EF 0015, or None for a one-level card.

        MOHURD and campus: city code ‖ FF ‖ 00×5 (§2.5 [S]); city code 0000 means one level [D].
        MOT: the 8-byte issuer id at 0015[0..7] [A]; all zero means one level [D].
        """
        if self.name == "mot":
            issuer = ef15[0:8]
            return issuer if any(issuer) else None
        city = ef15[2:4]
        return city + b"\xff" + bytes(5) if any(city) else None


MOHURD = Profile("mohurd", 0x01, bytes.fromhex("A00000000386980701"), b"\x3f\x01", 12, 8, 28)
MOT = Profile("mot", 0x02, bytes.fromhex("A000000632010105"), b"\x3f\x01", 10, 10, 8)
# Campus cards use the MOHURD layout under our own proprietary AID ("F0" + "ONECARD") [D].
CAMPUS = Profile("campus", 0x03, bytes.fromhex("F04F4E4543415244"), b"\x10\x01", 12, 8, 28)

PROFILES: dict[str, Profile] = {p.name: p for p in (MOHURD, MOT, CAMPUS)}


def profile_for_aid(aid: bytes) -> Profile | None:
    """The profile whose AID ``aid`` is, or None."""
    return next((p for p in PROFILES.values() if p.aid == aid), None)


def build_ef15(
    profile: Profile,
    *,
    asn: bytes,
    issuer_factor: bytes | None,
    card_type: int = 0x01,
    start: bytes = bytes.fromhex("20240101"),
    expiry: bytes = bytes.fromhex("20341231"),
) -> bytes:
    """EF 0015 image (30 bytes) for ``profile``. Raises ValueError on a malformed ASN/factor."""
    asn = _normalise_asn(profile, asn)
    if profile.name == "mot":
        head = (issuer_factor or bytes(8)) + bytes((card_type, 0x01))
        body = head + asn
    else:
        city = _city_code(issuer_factor)
        head = bytes(2) + city + bytes(4) + b"\x01\x01" + bytes(2)
        body = head + asn
    tail = start + expiry + (bytes((card_type, 0x00)) if profile.name != "mot" else bytes(2))
    image = body + tail
    assert len(image) == EF15_LEN
    return image


def _normalise_asn(profile: Profile, asn: bytes) -> bytes:
    if profile.asn_len == 10 and len(asn) == 8:
        return bytes(2) + asn  # MOT: an 8-byte serial is stored right-aligned [D]
    if len(asn) != profile.asn_len:
        raise ValueError(f"{profile.name} ASN must be {profile.asn_len} bytes")
    return asn


def _city_code(issuer_factor: bytes | None) -> bytes:
    if issuer_factor is None:
        return bytes(2)
    if len(issuer_factor) != 8 or issuer_factor[2:] != b"\xff" + bytes(5):
        raise ValueError("MOHURD/campus issuer factor must be city(2) || FF || 00x5")
    if not any(issuer_factor[:2]):
        raise ValueError("city code 0000 is reserved for one-level cards")
    return issuer_factor[:2]


def build_ef16(name: str = "", id_number: str = "", id_type: int = 0, staff: int = 0) -> bytes:
    """EF 0016 cardholder data (55 bytes, §4.3): flags, GBK name(20), ASCII id(32), id type."""
    name_bytes = name.encode("gbk")[:20].ljust(20, b"\x00")
    id_bytes = id_number.encode("ascii")[:32].ljust(32, b"\x00")
    return bytes((0x00, staff)) + name_bytes + id_bytes + bytes((id_type,))
