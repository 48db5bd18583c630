"""Key-system profiles (spec epurse.md §3, §4.2, §13): MOHURD, MOT and campus.

A profile says which ADF a purse lives in, how many diversification levels lead from the key
the platform holds to a card key, and how the factors are read from the card's EF 0015 image.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from onecard.keys.errors import InvalidInput

EF0015_LEN: Final = 30


class Profile(StrEnum):
    """Key system of a card application."""

    MOHURD = "mohurd"  # 住建部 CJ/T 166, City Union
    MOT = "mot"  # 交通运输部 JT/T 978, T-Union
    CAMPUS = "campus"  # campus / enterprise: school master → card, one level


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """Defaults of a profile; ``levels`` counts factors from the held master to the card."""

    profile: Profile
    aid: str | None
    levels: int


PROFILES: Final = {
    # A MOHURD city holds its city master (one level); an interoperable PSAM/HSM holding the
    # ministry root uses two (city factor, ASN). Default: the root, as in the spec's example.
    Profile.MOHURD: ProfileSpec(Profile.MOHURD, "A00000000386980701", 2),
    Profile.MOT: ProfileSpec(Profile.MOT, "A000000632010105", 2),
    Profile.CAMPUS: ProfileSpec(Profile.CAMPUS, None, 1),
}


def mohurd_city_factor(city_code: bytes) -> bytes:
    """MOHURD second-level factor: 城市代码(2) ‖ FF ‖ 00×5, e.g. Shanghai 2000FF0000000000."""
    if len(city_code) != 2:
        raise InvalidInput(f"city code must be 2 bytes, got {len(city_code)}")
    return city_code + b"\xff" + bytes(5)


def card_factors(profile: Profile, ef0015: bytes, levels: int) -> tuple[bytes, ...]:
    """Diversification factors (highest level first, ASN last) read from an EF 0015 image.

    MOHURD: city factor from bytes 2–3, ASN bytes 12–19. MOT: issuer id bytes 0–7 (assumed
    [A]), ASN = rightmost 8 of the 10-byte ASN at 10–19. Campus: ASN bytes 12–19, one level.
    ``levels`` 1 gives only the ASN (the platform holds an issuer-level master).
    """
    if len(ef0015) < EF0015_LEN:
        raise InvalidInput(f"EF 0015 image must be {EF0015_LEN} bytes, got {len(ef0015)}")
    asn = ef0015[12:20]
    if levels == 1:
        return (asn,)
    if levels != 2 or profile is Profile.CAMPUS:
        raise InvalidInput(f"profile {profile} cannot derive {levels} factors from EF 0015")
    issuer = mohurd_city_factor(ef0015[2:4]) if profile is Profile.MOHURD else ef0015[0:8]
    return (issuer, asn)
