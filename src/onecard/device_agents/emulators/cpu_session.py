"""Volatile state of the emulated CPU card: what a power loss or reset forgets.

Owns the selection, PIN-verified flag, GET CHALLENGE value, the pending INITIALIZE that a
CREDIT/DEBIT must directly follow (§14) and the CAPP record cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Pending:
    """What an INITIALIZE left for the following CREDIT/DEBIT."""

    ttype: int
    key_index: int
    key_version: int
    amount: int
    terminal: bytes
    balance: int
    counter: int
    rnd: bytes = field(repr=False)
    session_key: bytes | None = field(default=None, repr=False)


@dataclass
class Session:
    """Volatile card state, lost on power off or reset."""

    in_adf: bool = False
    current_sfi: int | None = None
    pin_ok: bool = False
    pending: Pending | None = None
    capp_cache: dict[tuple[int, int], bytes] = field(default_factory=dict)
    challenge: bytes | None = None
