"""Symmetric sealing of small secrets kept in the database (TOTP seeds).

The key is derived with HKDF-SHA256 from ``security.secret_key``; values are sealed with
AES-256-GCM and stored as URL-safe base64 of ``nonce || ciphertext``.
"""

from __future__ import annotations

import base64
import os
import secrets as _stdlib_secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class SecretBox:
    """Seal and open short strings under a key derived from the platform secret."""

    def __init__(self, secret_key: str, purpose: str = "onecard.db-secrets") -> None:
        if len(secret_key) < 16:
            raise ValueError("security.secret_key must be at least 16 characters")
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
        self._aead = AESGCM(hkdf.derive(secret_key.encode()))

    def __repr__(self) -> str:
        return "SecretBox(***)"

    def seal(self, plaintext: str) -> str:
        """Encrypt ``plaintext``; each call uses a fresh random nonce."""
        nonce = os.urandom(12)
        return base64.urlsafe_b64encode(
            nonce + self._aead.encrypt(nonce, plaintext.encode(), None)
        ).decode()

    def open(self, sealed: str) -> str:
        """Decrypt a value from :meth:`seal`; raises ``ValueError`` if it was altered."""
        raw = base64.urlsafe_b64decode(sealed.encode())
        try:
            return self._aead.decrypt(raw[:12], raw[12:], None).decode()
        except InvalidTag:
            raise ValueError("sealed secret was altered or sealed under another key") from None


def load_or_create_secret_key(path: Path) -> str:
    """Read the platform secret from ``path``, creating it (mode 0600) on first start."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = _stdlib_secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(key)
    return key
