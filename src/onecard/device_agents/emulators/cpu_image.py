"""The persistent image of an emulated CPU card: files, purse, keys, PIN and last proof.

Owns the durable state (everything that survives power loss) as frozen values and its JSON
form. Volatile state (selection, PIN-verified flag, a pending INITIALIZE) lives in the card.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from onecard.keys.algorithms import Algorithm

RECORD_0018_LEN = 23
RECORD_0018_COUNT = 10
CAPP_SFIS = (0x19, 0x1A)
MAC_FAILURE_LIMIT = 3


@dataclass(frozen=True, slots=True)
class CardKey:
    """One card application key (already diversified for this card)."""

    version: int
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Purse:
    """EP purse: balance in fen, counters as the card will return them from INITIALIZE."""

    balance: int
    online_counter: int = 0
    offline_counter: int = 0
    overdraft: int = 0


@dataclass(frozen=True, slots=True)
class Proof:
    """What GET TRANSACTION PROVE answers: the last committed purse transaction."""

    ttype: int
    counter: int
    mac: bytes
    tac: bytes


@dataclass(frozen=True, slots=True)
class CardImage:
    """Durable card state. Keys: name (DLK, DPK, DTK, DAMK…) → key index → CardKey."""

    profile: str
    alg: Algorithm
    alg_id: int
    ef15: bytes
    ef16: bytes
    keys: Mapping[str, Mapping[int, CardKey]] = field(repr=False)
    purse: Purse
    pin: bytes | None = field(default=None, repr=False)
    pin_tries_left: int = 3
    pin_max_tries: int = 3
    records: tuple[bytes, ...] = ()
    capp: Mapping[int, Mapping[int, bytes]] = field(default_factory=dict)
    proof: Proof | None = None
    mac_failures: Mapping[str, int] = field(default_factory=dict)
    max_balance: int = 0x7FFFFFFF

    def key(self, name: str, index: int) -> CardKey | None:
        return self.keys.get(name, {}).get(index)

    def key_locked(self, name: str, index: int) -> bool:
        return self.mac_failures.get(f"{name}{index:02X}", 0) >= MAC_FAILURE_LIMIT

    def with_mac_failure(self, name: str, index: int, failed: bool) -> CardImage:
        """Count a MAC failure for a key, or reset its count after a good MAC."""
        label = f"{name}{index:02X}"
        counts = dict(self.mac_failures)
        counts[label] = counts.get(label, 0) + 1 if failed else 0
        return replace(self, mac_failures=counts)

    def with_record(self, record: bytes) -> CardImage:
        """Prepend a 0018 record (cyclic file: the newest is record 1, oldest drops out)."""
        return replace(self, records=((record, *self.records))[:RECORD_0018_COUNT])


def image_to_json(image: CardImage) -> dict[str, Any]:
    """JSON form of an image (hex strings). Contains clear keys: a development artefact."""
    return {
        "format": "onecard-cpu-card/1",
        "profile": image.profile,
        "alg": image.alg.value,
        "alg_id": image.alg_id,
        "ef15": image.ef15.hex(),
        "ef16": image.ef16.hex(),
        "keys": {
            name: {str(i): {"version": k.version, "key": k.key.hex()} for i, k in by_index.items()}
            for name, by_index in image.keys.items()
        },
        "purse": _purse_json(image.purse),
        "pin": image.pin.hex() if image.pin is not None else None,
        "pin_tries_left": image.pin_tries_left,
        "pin_max_tries": image.pin_max_tries,
        "records": [r.hex() for r in image.records],
        "capp": {
            str(s): {str(i): r.hex() for i, r in recs.items()} for s, recs in image.capp.items()
        },
        "proof": _proof_json(image.proof),
        "mac_failures": dict(image.mac_failures),
        "max_balance": image.max_balance,
    }


def image_from_json(doc: Mapping[str, Any]) -> CardImage:
    """Inverse of `image_to_json`. Raises KeyError/ValueError on a malformed document."""
    return CardImage(
        profile=doc["profile"],
        alg=Algorithm(doc["alg"]),
        alg_id=int(doc["alg_id"]),
        ef15=bytes.fromhex(doc["ef15"]),
        ef16=bytes.fromhex(doc["ef16"]),
        keys=_keys_from_json(doc["keys"]),
        purse=Purse(**doc["purse"]),
        pin=bytes.fromhex(doc["pin"]) if doc.get("pin") is not None else None,
        pin_tries_left=int(doc["pin_tries_left"]),
        pin_max_tries=int(doc["pin_max_tries"]),
        records=tuple(bytes.fromhex(r) for r in doc["records"]),
        capp=_capp_from_json(doc["capp"]),
        proof=_proof_from_json(doc.get("proof")),
        mac_failures={str(k): int(v) for k, v in doc["mac_failures"].items()},
        max_balance=int(doc["max_balance"]),
    )


def _purse_json(purse: Purse) -> dict[str, int]:
    return {
        "balance": purse.balance,
        "online_counter": purse.online_counter,
        "offline_counter": purse.offline_counter,
        "overdraft": purse.overdraft,
    }


def _proof_json(proof: Proof | None) -> dict[str, Any] | None:
    if proof is None:
        return None
    return {"ttype": proof.ttype, "counter": proof.counter, "mac": proof.mac.hex(),
            "tac": proof.tac.hex()}  # fmt: skip


def _proof_from_json(doc: Mapping[str, Any] | None) -> Proof | None:
    if doc is None:
        return None
    return Proof(int(doc["ttype"]), int(doc["counter"]), bytes.fromhex(doc["mac"]),
                 bytes.fromhex(doc["tac"]))  # fmt: skip


def _keys_from_json(doc: Mapping[str, Any]) -> dict[str, dict[int, CardKey]]:
    return {
        name: {int(i): CardKey(int(k["version"]), bytes.fromhex(k["key"])) for i, k in by.items()}
        for name, by in doc.items()
    }


def _capp_from_json(doc: Mapping[str, Any]) -> dict[int, dict[int, bytes]]:
    return {int(s): {int(i): bytes.fromhex(r) for i, r in recs.items()} for s, recs in doc.items()}
