"""The HSM (加密机) interface: operations on keys it holds, never a clear master key out.

`Hsm` is a `typing.Protocol`; `onecard.keys.softhsm.SoftHsm` is the software backend and a
PKCS#11 backend can implement the same protocol without touching callers (`KeyService` only
knows this protocol). Requests and results are frozen dataclasses; reprs never show key bytes.

What leaves an HSM: MACs, verdicts, key check values, card-level keys wrapped under a transport
key, and — only in a key ceremony, for keys marked exportable — XOR components with KCVs.
M1 sector keys are card-level 6-byte keys that a MIFARE reader must hold in clear (§11).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from onecard.keys.algorithms import Algorithm
from onecard.keys.errors import InvalidInput
from onecard.keys.macdata import TYPE_LOAD, TYPE_PURCHASE

MAX_LEVELS = 3


class KeyUsage(StrEnum):
    """What a key may be used for, fixed by its name (prefix) so no key serves two purposes."""

    LOAD = "load"  # DLK…: load MAC1/MAC2 only
    PURCHASE = "purchase"  # DPK…: purchase MAC1/MAC2, PSAM images
    TAC = "tac"  # DTK…: TAC verification, PSAM images
    M1 = "m1"  # M1…: per-application MIFARE Classic master
    TRANSPORT = "transport"  # TK…: wraps keys for personalisation devices and PSAMs
    SECURE_MESSAGING = "sm"  # DAMK, DACK, DCCK, …: secure-messaging MACs


_USAGE_PREFIXES = (
    ("DLK", KeyUsage.LOAD),
    ("DPK", KeyUsage.PURCHASE),
    ("DTK", KeyUsage.TAC),
    ("M1", KeyUsage.M1),
    ("TK", KeyUsage.TRANSPORT),
)


def usage_of(name: str) -> KeyUsage:
    """The usage of a key name: DLK1 → LOAD, DPK2 → PURCHASE, DTK → TAC, M1 → M1, TK → TRANSPORT,
    anything else (DAMK, DACK, DCCK, DPUK …) → SECURE_MESSAGING."""
    upper = name.upper()
    for prefix, usage in _USAGE_PREFIXES:
        if upper.startswith(prefix):
            return usage
    return KeyUsage.SECURE_MESSAGING


@dataclass(frozen=True, slots=True, order=True)
class KeyRef:
    """Identifies one stored key: (tenant, card application, key name, version).

    ``name`` is the key type: "DLK", "DPK", "DTK", "DAMK", "DACK", "M1", "TK" (transport) …;
    ``version`` is the key version byte a card reports in INITIALIZE (0..255).
    """

    tenant_id: int
    application: str
    name: str
    version: int

    def __post_init__(self) -> None:
        if not 0 <= self.version <= 0xFF:
            raise InvalidInput(f"key version {self.version} out of range 0..255")
        if not self.application or not self.name:
            raise InvalidInput("key application and name must be non-empty")

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.application}/{self.name}/v{self.version}"

    def with_version(self, version: int) -> KeyRef:
        """The same key identity at another version."""
        return KeyRef(self.tenant_id, self.application, self.name, version)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """Public metadata of a stored key (no key bytes; the KCV is public by convention).

    ``levels`` is the number of diversification factors from this key to a card key (0–3).
    """

    ref: KeyRef
    algorithm: Algorithm
    levels: int
    kcv: bytes
    exportable: bool = True
    active: bool = True


@dataclass(frozen=True, slots=True)
class KeyComponent:
    """One XOR share of a key for a key ceremony, with its check value."""

    value: bytes = field(repr=False)
    kcv: bytes

    def __repr__(self) -> str:
        return f"KeyComponent(kcv={self.kcv.hex().upper()})"


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A key encrypted (ECB) under a transport key, with the clear key's KCV for checking."""

    name: str
    version: int
    algorithm: Algorithm
    ciphertext: bytes
    kcv: bytes


@dataclass(frozen=True, slots=True)
class WrappedKeySet:
    """Keys for one card or PSAM, all wrapped under ``transport`` (KCV names the TK)."""

    transport: KeyRef
    transport_kcv: bytes
    keys: tuple[WrappedKey, ...]


@dataclass(frozen=True, slots=True)
class LoadRequest:
    """An online load (圈存) as the host sees it (§5.2, §6, §7.1).

    ``factors`` lead from the master DLK to the card (highest level first, ASN last);
    ``balance`` is the old balance, ``online_counter`` the pre-increment value, ``date``/``time``
    the host's BCD date (4) and time (3) that go into MAC2.
    """

    factors: tuple[bytes, ...]
    rnd: bytes
    online_counter: int
    balance: int
    amount: int
    terminal: bytes
    mac1: bytes
    date: bytes
    time: bytes
    ttype: int = TYPE_LOAD


@dataclass(frozen=True, slots=True)
class PurchaseRequest:
    """A purchase the HSM authorises like a PSAM (cloud/QR terminals, §8.2, §8.5).

    ``terminal_serial`` is the TTS the caller allocated (strictly increasing per terminal).
    """

    factors: tuple[bytes, ...]
    rnd: bytes
    offline_counter: int
    terminal_serial: int
    amount: int
    terminal: bytes
    date: bytes
    time: bytes
    ttype: int = TYPE_PURCHASE


@dataclass(frozen=True, slots=True)
class TacCheck:
    """One record's TAC to check: card factors, the exact TAC input (§6) and the TAC."""

    factors: tuple[bytes, ...]
    data: bytes
    tac: bytes


@runtime_checkable
class Hsm(Protocol):
    """Operations of a hardware or software security module holding master keys.

    Every method raises `KeyNotFound` for an unknown ref and `OperationNotPermitted` when the
    key's usage forbids the operation. Factor tuples must have exactly the key's ``levels``
    entries (fewer for PSAM images and transport-wrapped issuer keys, as documented).
    """

    # key management -------------------------------------------------------------------
    def list_keys(self, tenant_id: int | None = None) -> list[KeyInfo]:
        """Metadata of all keys, optionally of one tenant, sorted by ref."""
        ...

    def key_info(self, ref: KeyRef) -> KeyInfo:
        """Metadata of one key."""
        ...

    def generate_key(
        self, ref: KeyRef, algorithm: Algorithm, levels: int, *, exportable: bool = True
    ) -> KeyInfo:
        """Create a random key inside the HSM; raises `KeyExists` if ``ref`` is taken."""
        ...

    def import_components(
        self,
        ref: KeyRef,
        algorithm: Algorithm,
        levels: int,
        components: Sequence[KeyComponent],
        *,
        expected_kcv: bytes | None = None,
        exportable: bool = True,
    ) -> KeyInfo:
        """Assemble a key from 2–3 XOR components, checking each KCV (`KcvMismatch`)."""
        ...

    def export_components(self, ref: KeyRef, count: int) -> list[KeyComponent]:
        """Split an exportable key into ``count`` (2–3) fresh random XOR components."""
        ...

    def set_active(self, ref: KeyRef, active: bool) -> KeyInfo:
        """Retire (or re-activate) a key version; retired keys refuse every operation."""
        ...

    # card operations ------------------------------------------------------------------
    def load_mac2(self, dlk: KeyRef, request: LoadRequest) -> bytes:
        """Verify the card's load MAC1 and return MAC2; `MacInvalid` if MAC1 is wrong."""
        ...

    def purchase_mac1(self, dpk: KeyRef, request: PurchaseRequest) -> bytes:
        """PSAM-equivalent purchase MAC1 (4 bytes)."""
        ...

    def verify_purchase_mac2(self, dpk: KeyRef, request: PurchaseRequest, mac2: bytes) -> bool:
        """Whether the card's purchase MAC2 is right for the same request."""
        ...

    def verify_tacs(self, dtk: KeyRef, checks: Sequence[TacCheck]) -> list[bool]:
        """Verdict per record; batches by issuer-level key and by card key."""
        ...

    def derive_and_mac(
        self, ref: KeyRef, factors: Sequence[bytes], data: bytes, iv: bytes | None = None
    ) -> bytes:
        """Secure-messaging MAC (§2.3/§2.4) with the card-level key; refused for DLK/DPK/DTK."""
        ...

    def m1_sector_key(
        self, ref: KeyRef, uid: bytes, app_code: int, sector: int, key_type: int
    ) -> bytes:
        """The 6-byte card-level M1 sector key (§11) from a per-application M1 master."""
        ...

    def wrap_card_keys(
        self, refs: Sequence[KeyRef], factors: Sequence[bytes], transport: KeyRef
    ) -> WrappedKeySet:
        """Card-level keys (each fully diversified by ``factors``) wrapped under ``transport``."""
        ...

    def wrap_psam_image(
        self, refs: Sequence[KeyRef], factors: Sequence[bytes], transport: KeyRef
    ) -> WrappedKeySet:
        """Purchase/TAC/M1 keys diversified by the leading ``factors`` (may be none) for a PSAM."""
        ...
