"""Development master keys from a JSON file, for `card emulate` / `psam emulate` and tests.

Owns the refusal rule: a key file is accepted only with ``"development": true``, so production
key material cannot be fed to an emulator by mistake. Format::

    {"development": true, "key_version": 1,
     "DLK": "<32 hex>", "DPK": "<32 hex>", "DTK": "<32 hex>", "DAMK": "<32 hex>",
     "sm4": {"DLK": "...", ...}, "3des": {...}}

Top-level names serve both algorithms; an ``"sm4"`` or ``"3des"`` section overrides them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from onecard.keys.algorithms import Algorithm


class DevKeysError(ValueError):
    """The development key file is missing, malformed or not marked as development."""


@dataclass(frozen=True, slots=True)
class DevKeys:
    """Clear master keys by algorithm and name; never printed (repr hides them)."""

    by_alg: Mapping[Algorithm, Mapping[str, bytes]] = field(repr=False)
    key_version: int = 1

    def masters(self, algorithm: Algorithm) -> dict[str, bytes]:
        return dict(self.by_alg.get(algorithm, {}))


def load_dev_keys(path: str | os.PathLike[str]) -> DevKeys:
    """Read and validate a development key file. Raises DevKeysError with a clear message."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise DevKeysError(f"cannot read development key file {path}: {err}") from err
    return parse_dev_keys(doc)


def parse_dev_keys(doc: Any) -> DevKeys:
    """Validate a parsed key document (see module docstring)."""
    if not isinstance(doc, dict) or doc.get("development") is not True:
        raise DevKeysError(
            'refusing key file without "development": true — emulators take development keys only'
        )
    common = _named_keys(doc)
    by_alg = {a: {**common, **_named_keys(doc.get(a.value, {}))} for a in Algorithm}
    for algorithm, keys in by_alg.items():
        missing = [n for n in ("DLK", "DPK", "DTK") if n not in keys]
        if missing:
            raise DevKeysError(f"{algorithm.value}: missing master keys {', '.join(missing)}")
    return DevKeys(by_alg, int(doc.get("key_version", 1)))


def _named_keys(section: Any) -> dict[str, bytes]:
    if not isinstance(section, dict):
        raise DevKeysError("an algorithm section must be an object of name → hex key")
    keys: dict[str, bytes] = {}
    for name, value in section.items():
        if not (name.isupper() and isinstance(value, str)):
            continue
        try:
            key = bytes.fromhex(value)
        except ValueError as err:
            raise DevKeysError(f"key {name} is not hex") from err
        if len(key) != 16:
            raise DevKeysError(f"key {name} must be 16 bytes (32 hex digits)")
        keys[name] = key
    return keys
