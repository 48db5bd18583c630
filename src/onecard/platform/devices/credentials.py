"""Device MQTT credentials: random passwords, Mosquitto 2.x ``$7$`` hashes, rotation.

Only the hash is stored; the clear password is shown once (``onecard devices add``, the REST
create and rotate calls). The hash is exactly what Mosquitto's ``password_file`` expects
(PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt), so the broker config is generated from the
registry without ever seeing a password again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

ITERATIONS = 101  # what mosquitto_passwd 2.0 writes; the broker reads the count from the hash


def new_password() -> str:
    """A random 32-character password."""
    return secrets.token_urlsafe(24)


def mosquitto_hash(password: str, *, salt: bytes | None = None) -> str:
    """The ``$7$`` hash of ``password`` as ``mosquitto_passwd`` writes it."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    """True when ``password`` matches a ``$7$`` hash (used by the amqtt fallback and tests)."""
    try:
        _, kind, iterations, salt, digest = stored.split("$")
    except ValueError:
        return False
    if kind != "7":
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    return hmac.compare_digest(got, base64.b64decode(digest))
