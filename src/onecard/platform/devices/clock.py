"""Clock synchronisation (``up/time`` → ``down/time``), NTP-style.

The device sends ``t0`` (its clock); the platform answers ``t1`` (receive) and ``t2`` (send),
both in ms of platform time; with its own receive time ``t3`` the device computes
offset = ((t1 − t0) + (t2 − t3)) / 2 and round trip = (t3 − t0) − (t2 − t1).
"""

from __future__ import annotations

from datetime import datetime


def to_ms(when: datetime) -> int:
    """Milliseconds since the Unix epoch."""
    return int(when.timestamp() * 1000)


def answer(t0: int, received: datetime, sending: datetime) -> dict[str, int]:
    """The ``down/time`` body for a request with device time ``t0``."""
    return {"t0": t0, "t1": to_ms(received), "t2": to_ms(sending)}


def offset_ms(t0: int, t1: int, t2: int, t3: int) -> tuple[int, int]:
    """``(offset of the device clock from the platform's, round trip)``; device − platform."""
    platform_minus_device = ((t1 - t0) + (t2 - t3)) // 2
    return -platform_minus_device, (t3 - t0) - (t2 - t1)
