"""The ``canteen_sale`` record a POS uploads after deciding alone, its MAC and the POS's MAC key.

The contract with the canteen's server side (``onecard.modules.canteen.recordflow``): a sale
charged to the holder's platform purses is an ``up/records`` record of event
:data:`SALE_EVENT` whose ``extra`` holds ``list_fen``, ``period``, ``mac`` and ``key_version``;
the MAC covers :func:`mac_message` of the :data:`MAC_FIELDS` as uploaded (``card_no`` is the
credential's value as the POS read it, ``amount_fen`` the record's ``amount``, ``device_time``
milliseconds of the POS clock). A sale paid from the CPU card's own purse carries the terminal's
80-byte clearing record in ``clearing`` instead of a MAC (the card's TAC vouches for it).

The MAC key is the POS's own (``RMK`` diversified by its device id, ``onecard.keys.terminals``);
the platform provisions it wrapped under the key application's transport key
(``onecard canteen pos-key``), and :func:`unwrap_pos_key` is what the POS does with that
document. Key bytes never appear in a ``repr`` or a log line.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from onecard.device_agents.personalities.pos_rules import Verdict
from onecard.keys import algorithms as alg
from onecard.keys.algorithms import Algorithm
from onecard.keys.terminals import RECORD_MAC_KEY, terminal_mac

SALE_EVENT = "canteen_sale"
"""``event`` of a sale a POS decided offline (``up/records``). Its ``extra`` holds ``list_fen``,
``period`` and, when the holder's platform purses pay, ``mac`` and ``key_version``; a sale paid
from the CPU card's own purse carries the terminal's clearing record in ``clearing`` instead."""

MAC_FIELDS = (
    "device_id", "epoch", "seq", "card_no", "amount_fen", "list_fen", "device_time", "period",
)  # fmt: skip


def mac_message(fields: Mapping[str, Any]) -> bytes:
    """The canonical bytes an offline sale record's MAC covers (``card_no``: the credential
    as the POS read it; ``device_time``: milliseconds of the POS clock)."""
    body = {k: fields.get(k) for k in MAC_FIELDS}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_mac(algorithm: Algorithm, device_key: bytes, fields: Mapping[str, Any]) -> str:
    """The POS's MAC of a record (hex): its own key, provisioned by the key service.

    The server never holds the key: it asks the key service to verify
    (``onecard.modules.canteen.terminalkeys``).
    """
    return terminal_mac(algorithm, device_key, mac_message(fields)).hex()


# --- the POS's key ------------------------------------------------------------------------------


class PosKeyError(ValueError):
    """A key document the POS cannot use: malformed, another transport key, or a KCV mismatch.
    The message never contains key bytes."""


@dataclass(frozen=True)
class PosKey:
    """A POS's record MAC key in the clear, as the POS holds it (``key`` is never shown)."""

    algorithm: Algorithm
    version: int
    key: bytes = field(repr=False)

    def kcv(self) -> bytes:
        """The key's check value (safe to show: it identifies the key, it does not reveal it)."""
        return alg.kcv(self.algorithm, self.key)

    def to_text(self) -> str:
        """``"<algorithm>:<version>:<hex>"``: how the agent keeps the key in its local store."""
        return f"{self.algorithm.value}:{self.version}:{self.key.hex()}"

    @classmethod
    def from_text(cls, text: str) -> PosKey:
        """The inverse of :meth:`to_text`; :class:`PosKeyError` when it is not one."""
        try:
            algorithm, version, key = text.split(":")
            return cls(Algorithm(algorithm), int(version), bytes.fromhex(key))
        except ValueError:
            raise PosKeyError("the stored POS key is not <algorithm>:<version>:<hex>") from None


def unwrap_pos_key(document: Mapping[str, Any], transport_key: bytes) -> PosKey:
    """The POS's key from what ``onecard canteen pos-key`` printed for it, unwrapped with the
    application's transport key (the custodians' components XORed together).

    The transport key must match the document's transport KCV and the unwrapped key its own KCV
    (both under the key's algorithm: one key application has one algorithm); anything else
    raises :class:`PosKeyError`.
    """
    wrapped = _rmk_entry(document)
    try:
        algorithm = Algorithm(str(wrapped["algorithm"]))
        version = int(wrapped["version"])
        ciphertext = bytes.fromhex(str(wrapped["wrapped"]))
        kcv = bytes.fromhex(str(wrapped["kcv"]))
        transport_kcv = bytes.fromhex(str(document["transport"]["kcv"]))
    except (KeyError, TypeError, ValueError):
        raise PosKeyError(
            "the key document lacks the algorithm, version, wrapped key or KCVs"
        ) from None
    if not _kcv_matches(algorithm, transport_key, transport_kcv):
        raise PosKeyError("the transport key does not match the document's transport KCV")
    try:
        clear = alg.ecb_decrypt(algorithm, transport_key, ciphertext)
    except ValueError:
        raise PosKeyError("the wrapped key is not whole blocks of its algorithm") from None
    if not _kcv_matches(algorithm, clear, kcv):
        raise PosKeyError("the unwrapped key does not match its KCV")
    return PosKey(algorithm, version, clear)


def _rmk_entry(document: Mapping[str, Any]) -> Mapping[str, Any]:
    """The document's one record MAC key entry."""
    keys = document.get("keys")
    entries = keys if isinstance(keys, list) else []
    found = [k for k in entries if isinstance(k, Mapping) and k.get("name") == RECORD_MAC_KEY]
    if len(found) != 1:
        raise PosKeyError(f"the key document must hold exactly one {RECORD_MAC_KEY} key")
    return found[0]


def _kcv_matches(algorithm: Algorithm, key: bytes, kcv: bytes) -> bool:
    """Constant-time KCV check; a key of the wrong length for the algorithm does not match."""
    try:
        return hmac.compare_digest(alg.kcv(algorithm, key), kcv)
    except ValueError:
        return False


# --- the record ---------------------------------------------------------------------------------


def sale_fields(
    verdict: Verdict, *, credential: Mapping[str, str], device_time: int
) -> dict[str, Any]:
    """The record of an allowed sale, before the store gives it its place (``epoch``, ``seq``)
    and before it is sealed (:func:`sealed`) or given a ``clearing`` record."""
    return {
        "event": SALE_EVENT,
        "device_time": device_time,
        "credential": dict(credential),
        "allow": True,
        "reason": "OK",
        "amount": verdict.amount_fen,
        "extra": {"list_fen": verdict.list_fen, "period": verdict.period},
    }


def sale_mac(
    fields: Mapping[str, Any], key: PosKey, *, device_id: str, epoch: str, seq: int
) -> dict[str, Any]:
    """The ``mac`` and ``key_version`` of the sale ``fields`` (from :func:`sale_fields`) stored
    at ``(epoch, seq)``, the MAC covering the record exactly as the server will read it."""
    extra = fields["extra"]
    covered = {
        "device_id": device_id,
        "epoch": epoch,
        "seq": seq,
        "card_no": fields["credential"]["value"],
        "amount_fen": fields["amount"],
        "list_fen": extra.get("list_fen"),
        "device_time": fields["device_time"],
        "period": extra.get("period"),
    }
    return {"mac": record_mac(key.algorithm, key.key, covered), "key_version": key.version}


def sealed(
    fields: Mapping[str, Any], key: PosKey, *, device_id: str, epoch: str, seq: int
) -> dict[str, Any]:
    """``fields`` with :func:`sale_mac` added to their ``extra``."""
    mac = sale_mac(fields, key, device_id=device_id, epoch=epoch, seq=seq)
    return {**fields, "extra": {**fields["extra"], **mac}}
