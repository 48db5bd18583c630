"""Terminal keys: one MAC key per terminal, so the platform can tell a terminal's records from
forgeries without ever holding a terminal key itself.

A module that authenticates what its terminals upload (canteen POS sale records) keeps a master
*record MAC key* named :data:`RECORD_MAC_KEY` under a card application it owns, with one
diversification level. By its name the key is a secure-messaging key, so the HSM refuses it for
load, purchase or TAC work (and the purse keys for this). A terminal's key is the master
diversified by :func:`terminal_factor` of the terminal's device id:

* provisioning: the terminal receives its key once, wrapped under the application's transport
  key (`KeyService.card_personalisation` with the terminal factor), and checks its KCV;
* the terminal MACs each record with :func:`terminal_mac`;
* the platform checks MACs with `KeyService.verify_macs`, which recomputes and compares inside
  the key service: only verdicts come out, never a terminal key or a MAC of chosen data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from onecard.keys import algorithms as alg
from onecard.keys.algorithms import Algorithm
from onecard.keys.errors import InvalidInput

RECORD_MAC_KEY: Final = "RMK"
MAC_LEN: Final = 4
_FACTOR_DOMAIN: Final = b"onecard-terminal\x00"


def terminal_factor(device_id: str) -> bytes:
    """The 8-byte diversification factor of the terminal ``device_id``.

    The first 8 bytes of SHA-256 over a fixed domain and the id: device ids are unique across
    tenants (they are MQTT usernames), so no two terminals share a key by accident.
    """
    if not device_id:
        raise InvalidInput("a terminal factor needs a device id")
    return hashlib.sha256(_FACTOR_DOMAIN + device_id.encode()).digest()[:8]


def terminal_mac(algorithm: Algorithm, key: bytes, data: bytes) -> bytes:
    """A terminal's 4-byte MAC of ``data`` under its own (already diversified) key.

    The same MAC the HSM's ``derive_and_mac`` computes from the master and the terminal
    factor: the retail MAC for 3DES, the SM4 MAC for SM4, zero IV, ``pad80``.
    """
    return alg.mac(algorithm, key, data)


@dataclass(frozen=True, slots=True)
class MacCheck:
    """One MAC to verify: the key's diversification factors, the MACed data and the MAC."""

    factors: tuple[bytes, ...]
    data: bytes
    mac: bytes
