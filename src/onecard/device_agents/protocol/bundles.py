"""Signed configuration bundles, pure: build, sign and verify ``down/config`` payloads.

The signature binds device, version and content: Ed25519 over the ASCII text
``oc-config/v1|{device}|{version}|{sha256}``, where ``sha256`` is the hex hash of the UTF-8 body.
A device refuses a bundle whose hash, signature or device does not match, so a bundle can't be
altered, moved to another device, or have its version changed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from onecard.device_agents.protocol.codes import ErrorReason, ProtocolError
from onecard.device_agents.protocol.messages import ConfigBundle


def signing_input(device: str, version: int, sha256: str) -> bytes:
    """The exact bytes the tenant key signs."""
    return f"oc-config/v1|{device}|{version}|{sha256}".encode("ascii")


def canonical_body(body: Mapping[str, Any]) -> str:
    """JSON text of a body: sorted keys, no spaces, UTF-8 kept (what gets hashed and sent)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def make_bundle(
    device: str,
    version: int,
    body: Mapping[str, Any] | str,
    key: Ed25519PrivateKey,
    *,
    key_id: str | None = None,
) -> ConfigBundle:
    """A signed bundle for ``device`` (``body`` as a mapping, or JSON text sent as is)."""
    text = body if isinstance(body, str) else canonical_body(body)
    digest = hashlib.sha256(text.encode()).hexdigest()
    signature = key.sign(signing_input(device, version, digest))
    return ConfigBundle(
        device=device,
        version=version,
        sha256=digest,
        body=text,
        signature=base64.b64encode(signature).decode(),
        key_id=key_id,
    )


def public_key_from_hex(hex_key: str) -> Ed25519PublicKey:
    """The 32-byte raw public key given as hex (how a device is provisioned)."""
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_key))
    except ValueError:
        raise ProtocolError(ErrorReason.BAD_VALUE, "public key: 32 bytes hex") from None


def public_key_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Hex of the raw 32-byte public key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes_raw().hex()


def verify_bundle(
    bundle: ConfigBundle, public_key: Ed25519PublicKey, *, device: str
) -> dict[str, Any]:
    """The parsed body if ``bundle`` is for ``device``, intact and signed; else `ProtocolError`
    (``wrong_device``, ``bad_hash``, ``bad_signature`` or ``bad_value``)."""
    if bundle.device != device:
        raise ProtocolError(ErrorReason.WRONG_DEVICE, f"bundle for {bundle.device}")
    if hashlib.sha256(bundle.body.encode()).hexdigest() != bundle.sha256:
        raise ProtocolError(ErrorReason.BAD_HASH, f"config v{bundle.version}")
    try:
        signature = base64.b64decode(bundle.signature, validate=True)
        public_key.verify(signature, signing_input(device, bundle.version, bundle.sha256))
    except (InvalidSignature, binascii.Error, ValueError):
        raise ProtocolError(ErrorReason.BAD_SIGNATURE, f"config v{bundle.version}") from None
    try:
        body = json.loads(bundle.body)
    except ValueError:
        raise ProtocolError(ErrorReason.BAD_VALUE, "config body is not JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError(ErrorReason.BAD_VALUE, "config body is not an object")
    return body
