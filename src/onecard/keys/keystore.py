"""The software HSM's key store file: AES-256-GCM at rest, authenticated, written atomically.

File layout: ``MAGIC (8 bytes) ‖ nonce (12) ‖ AES-256-GCM(KEK, nonce, JSON, aad=MAGIC)``.
The JSON inside lists entries (ref, algorithm, levels, flags, key hex). Any changed byte makes
`read_store` raise `KeyStoreTampered`; a fresh nonce is drawn for every write. Writes go to a
temporary file in the same directory, are fsynced, then renamed over the old file (and the
directory is fsynced) so a crash leaves either the old or the new store, never half of one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from onecard.keys.algorithms import Algorithm
from onecard.keys.errors import KeyStoreError, KeyStoreTampered
from onecard.keys.hsm import KeyInfo, KeyRef

MAGIC: Final = b"OCKSTOR1"
KEK_BYTES: Final = 32
_NONCE_BYTES: Final = 12


@dataclass(slots=True)
class StoredKey:
    """A key as held inside the software HSM. The repr hides the key bytes."""

    ref: KeyRef
    algorithm: Algorithm
    levels: int
    secret: bytes = field(repr=False)
    kcv: bytes
    exportable: bool = True
    active: bool = True

    def info(self) -> KeyInfo:
        """Public metadata."""
        return KeyInfo(
            self.ref, self.algorithm, self.levels, self.kcv, self.exportable, self.active
        )


def load_kek(
    value: bytes | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    env: str | None = None,
) -> bytes:
    """Return the 32-byte key-encryption key from exactly one source.

    ``value``: 32 raw bytes. ``path``: a file holding 32 raw bytes, or 64 hex characters, or
    base64 of 32 bytes (surrounding whitespace ignored). ``env``: the *name* of an environment
    variable holding hex or base64. Raises `KeyStoreError` when the source is missing or the
    key is not 32 bytes; the message never contains the key.
    """
    if sum(x is not None for x in (value, path, env)) != 1:
        raise KeyStoreError("give exactly one KEK source: value, path or env")
    if value is not None:
        return _check_kek(value)
    if path is not None:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise KeyStoreError(f"cannot read KEK file {path}: {exc.strerror}") from None
        return _check_kek(raw if len(raw) == KEK_BYTES else _decode_text(raw.strip()))
    assert env is not None
    text = os.environ.get(env)
    if not text:
        raise KeyStoreError(f"environment variable {env} is not set")
    return _check_kek(_decode_text(text.strip().encode()))


def _decode_text(text: bytes) -> bytes:
    try:
        if len(text) == 2 * KEK_BYTES:
            return bytes.fromhex(text.decode("ascii"))
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise KeyStoreError("KEK is neither hex nor base64") from None


def _check_kek(kek: bytes) -> bytes:
    if len(kek) != KEK_BYTES:
        raise KeyStoreError(f"KEK must be {KEK_BYTES} bytes, got {len(kek)}")
    return kek


# --------------------------------------------------------------------------------------------
# (de)serialisation
# --------------------------------------------------------------------------------------------
def _entry_to_json(key: StoredKey) -> dict[str, Any]:
    r = key.ref
    return {
        "tenant_id": r.tenant_id,
        "application": r.application,
        "name": r.name,
        "version": r.version,
        "algorithm": key.algorithm.value,
        "levels": key.levels,
        "exportable": key.exportable,
        "active": key.active,
        "kcv": key.kcv.hex(),
        "key": key.secret.hex(),
    }


def _entry_from_json(d: dict[str, Any]) -> StoredKey:
    ref = KeyRef(int(d["tenant_id"]), str(d["application"]), str(d["name"]), int(d["version"]))
    return StoredKey(
        ref=ref,
        algorithm=Algorithm(d["algorithm"]),
        levels=int(d["levels"]),
        secret=bytes.fromhex(d["key"]),
        kcv=bytes.fromhex(d["kcv"]),
        exportable=bool(d["exportable"]),
        active=bool(d["active"]),
    )


def read_store(path: Path, kek: bytes) -> dict[KeyRef, StoredKey]:
    """Decrypt and parse the store; `KeyStoreTampered` if authentication fails."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise KeyStoreError(f"cannot read key store {path}: {exc.strerror}") from None
    if len(blob) < len(MAGIC) + _NONCE_BYTES + 16 or not blob.startswith(MAGIC):
        raise KeyStoreTampered(f"{path} is not an intact OneCard key store")
    nonce = blob[len(MAGIC) : len(MAGIC) + _NONCE_BYTES]
    try:
        plain = AESGCM(_check_kek(kek)).decrypt(nonce, blob[len(MAGIC) + _NONCE_BYTES :], MAGIC)
    except InvalidTag:
        raise KeyStoreTampered(f"{path} failed authentication (tampered or wrong KEK)") from None
    doc = json.loads(plain)
    keys = (_entry_from_json(d) for d in doc["keys"])
    return {k.ref: k for k in keys}


def write_store(path: Path, kek: bytes, keys: dict[KeyRef, StoredKey]) -> None:
    """Encrypt and atomically replace the store file (temp file + fsync + rename)."""
    doc = {"format": 1, "keys": [_entry_to_json(keys[r]) for r in sorted(keys)]}
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(_check_kek(kek)).encrypt(nonce, json.dumps(doc).encode(), MAGIC)
    _atomic_write(path, MAGIC + nonce + sealed)


def _atomic_write(path: Path, data: bytes) -> None:
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
