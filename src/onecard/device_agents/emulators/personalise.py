"""Card personalisation: EF 0015/0016, keys, PIN and purse written into a new card image.

Owns the issuance step for the emulator: given the card's own (diversified) application keys —
in clear, or wrapped together with the function that unwraps them inside the "card" — and the
holder data, it builds the `CardImage` an emulated card starts from. `derive_card_keys` is the
development path that diversifies clear master keys exactly as epurse.md §2.5 says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from onecard.device_agents.emulators.cpu_image import CAPP_SFIS, CardImage, CardKey, Purse
from onecard.device_agents.emulators.profiles import PROFILES, build_ef15, build_ef16
from onecard.keys import algorithms as alg
from onecard.keys.algorithms import Algorithm

REQUIRED_KEYS = ("DLK", "DPK", "DTK")
Unwrap = Callable[[str, bytes], bytes]


@dataclass(frozen=True, slots=True)
class Holder:
    """Cardholder data for EF 0016 (§4.3)."""

    name: str = ""
    id_number: str = ""
    id_type: int = 0
    staff: int = 0


@dataclass(frozen=True, slots=True)
class CardSpec:
    """What to issue: profile, algorithm, serial, issuer factor, purse and PIN."""

    profile: str
    alg: Algorithm
    asn: bytes
    issuer_factor: bytes | None = None
    balance: int = 0
    pin: bytes | None = None
    key_index: int = 1
    key_version: int = 1
    alg_id: int | None = None
    card_type: int = 0x01


def personalise(
    spec: CardSpec,
    keys: Mapping[str, bytes],
    holder: Holder | None = None,
    *,
    unwrap: Unwrap | None = None,
) -> CardImage:
    """Build a personalised card image.

    ``keys`` maps key names (DLK, DPK, DTK required; DAMK, DACK… optional) to this card's
    diversified 16-byte keys, or to wrapped blobs when ``unwrap(name, blob)`` is given.
    Raises ValueError for an unknown profile, a missing or malformed key, or a bad ASN/factor.
    """
    profile = PROFILES.get(spec.profile)
    if profile is None:
        raise ValueError(f"unknown profile {spec.profile!r}")
    ef15 = build_ef15(
        profile, asn=spec.asn, issuer_factor=spec.issuer_factor, card_type=spec.card_type
    )
    card_keys = _install_keys(spec, keys, unwrap)
    return CardImage(
        profile=profile.name,
        alg=spec.alg,
        alg_id=spec.alg.alg_id if spec.alg_id is None else spec.alg_id,
        ef15=ef15,
        ef16=build_ef16(**_holder_fields(holder or Holder())),
        keys=card_keys,
        purse=Purse(balance=spec.balance),
        pin=spec.pin,
        capp={sfi: {} for sfi in CAPP_SFIS},
    )


def _install_keys(
    spec: CardSpec, keys: Mapping[str, bytes], unwrap: Unwrap | None
) -> dict[str, dict[int, CardKey]]:
    missing = [name for name in REQUIRED_KEYS if name not in keys]
    if missing:
        raise ValueError(f"card keys missing: {', '.join(missing)}")
    installed: dict[str, dict[int, CardKey]] = {}
    for name, blob in keys.items():
        clear = unwrap(name, blob) if unwrap is not None else blob
        if len(clear) != 16:
            raise ValueError(f"card key {name} must be 16 bytes")
        installed[name] = {spec.key_index: CardKey(spec.key_version, clear)}
    return installed


def _holder_fields(holder: Holder) -> dict[str, str | int]:
    return {"name": holder.name, "id_number": holder.id_number, "id_type": holder.id_type,
            "staff": holder.staff}  # fmt: skip


def card_factors(spec: CardSpec) -> list[bytes]:
    """Diversification factors, highest level first: [issuer factor,] card factor (§2.5)."""
    card_factor = spec.asn[-8:]
    return [spec.issuer_factor, card_factor] if spec.issuer_factor else [card_factor]


def derive_card_keys(spec: CardSpec, masters: Mapping[str, bytes]) -> dict[str, bytes]:
    """Development path: diversify every clear master key for this card (§2.5, §3.2)."""
    factors = card_factors(spec)
    return {name: alg.diversify_path(spec.alg, mk, factors) for name, mk in masters.items()}
