"""Fixtures for the key service tests: the spec's vectors, a KEK, software HSMs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from onecard.keys.algorithms import Algorithm
from onecard.keys.hsm import KeyInfo, KeyRef
from onecard.keys.softhsm import SoftHsm, split_key

DATA = Path(__file__).parent / "data" / "epurse_vectors.json"
H = bytes.fromhex


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    """The spec's epurse_vectors.json (copied beside the tests)."""
    return json.loads(DATA.read_text(encoding="utf-8"))


@pytest.fixture
def kek() -> bytes:
    return bytes(range(32))


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "keys.store"


@pytest.fixture
def hsm(store_path: Path, kek: bytes) -> SoftHsm:
    return SoftHsm(store_path, kek, create=True)


ImportKey = Callable[[KeyRef, Algorithm, int, bytes], KeyInfo]


@pytest.fixture
def import_key(hsm: SoftHsm) -> ImportKey:
    """Load a known clear key into ``hsm`` the way a ceremony does: as two components."""

    def _import(ref: KeyRef, alg: Algorithm, levels: int, key: bytes) -> KeyInfo:
        return hsm.import_components(ref, alg, levels, split_key(alg, key, 2))

    return _import
