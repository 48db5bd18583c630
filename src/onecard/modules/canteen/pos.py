"""The POS terminal personality, as the canteen names it.

It lives in :mod:`onecard.device_agents.personalities.pos` (with its display, setup and
records beside it) because the agent and the simulator run it and device agents may not import
modules (ARCHITECTURE §2); this module keeps the canteen's names for it.
"""

from __future__ import annotations

from onecard.device_agents.personalities.pos import (
    PROTOCOL_TO_CANTEEN,
    TEXTS,
    Beep,
    OfflineBook,
    OfflinePos,
    PosSetup,
    Screen,
    Situation,
    Sold,
    decide,
    screen,
    screen_for_decision,
    screen_for_reply,
    situation,
    yuan,
)
from onecard.device_agents.personalities.pos_records import PosKey, unwrap_pos_key

__all__ = [
    "PROTOCOL_TO_CANTEEN",
    "TEXTS",
    "Beep",
    "OfflineBook",
    "OfflinePos",
    "PosKey",
    "PosSetup",
    "Screen",
    "Situation",
    "Sold",
    "decide",
    "screen",
    "screen_for_decision",
    "screen_for_reply",
    "situation",
    "unwrap_pos_key",
    "yuan",
]
