"""Finding the purse application on a card and reading what a terminal needs from EF 0015.

Owns `CardInfo`, the terminal's view of a card (profile, ASN, diversification factors, card type,
validity), and `select_purse`, which tries the known AIDs in turn (§4.1, §7.2 step 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from onecard.device_agents.emulators.profiles import PROFILES, Profile
from onecard.device_agents.terminal import apdus
from onecard.device_agents.terminal.channel import Exchange, StatusError


@dataclass(frozen=True, slots=True)
class CardInfo:
    """What EF 0015 tells a terminal about the card."""

    profile: str
    scheme: int
    aid: bytes
    asn: bytes
    card_factor: bytes
    issuer_factor: bytes | None
    card_type: int
    start: bytes
    expiry: bytes

    def psam_factors(self) -> list[bytes]:
        """Factors for PSAM `80 70`, card first (§8.2)."""
        return [self.card_factor, self.issuer_factor] if self.issuer_factor else [self.card_factor]

    @classmethod
    def from_ef15(cls, profile: Profile, ef15: bytes) -> CardInfo:
        return cls(
            profile=profile.name,
            scheme=profile.scheme,
            aid=profile.aid,
            asn=profile.asn(ef15),
            card_factor=profile.card_factor(ef15),
            issuer_factor=profile.issuer_factor(ef15),
            card_type=profile.card_type(ef15),
            start=ef15[20:24],
            expiry=ef15[24:28],
        )


class NoPurseError(Exception):
    """No known purse application answered SELECT."""


def select_purse(ex: Exchange, profiles: Sequence[Profile] | None = None) -> CardInfo:
    """SELECT the first known purse AID the card has, then read EF 0015 (30 bytes)."""
    for profile in profiles or list(PROFILES.values()):
        response = ex.send("select", apdus.select_aid(profile.aid))
        if response.sw == b"\x90\x00":
            ef15 = ex.ok("read 0015", apdus.read_binary_sfi(0x15, 30), 30)
            return CardInfo.from_ef15(profile, ef15)
        if response.sw[0] not in (0x6A, 0x69):
            raise StatusError("select", response.sw)
    raise NoPurseError("no purse application on this card")
