"""Clock sync arithmetic, pure (the NTP four-timestamp formula over ``up/time``/``down/time``).

The device sends ``t0`` (its clock), the platform stamps ``t1`` on receipt and ``t2`` on reply
(its clock), the device reads ``t3`` (its clock) when the reply arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

CLOCK_FLOOR_MS: Final = 1_704_067_200_000
"""2024-01-01T00:00:00Z: a device clock before this is invalid (modules.md X-R4)."""
DEFAULT_MAX_SKEW_MS: Final = 300_000


@dataclass(frozen=True, slots=True)
class ClockSample:
    """One measurement: ``offset_ms`` to add to device time to get platform time."""

    offset_ms: int
    rtt_ms: int


def measure(t0: int, t1: int, t2: int, t3: int) -> ClockSample:
    """Offset ``((t1 - t0) + (t2 - t3)) / 2`` and round trip ``(t3 - t0) - (t2 - t1)``."""
    return ClockSample(offset_ms=((t1 - t0) + (t2 - t3)) // 2, rtt_ms=max(0, (t3 - t0) - (t2 - t1)))


def corrected_time(device_time: int, offset_ms: int) -> int:
    """Platform-time estimate of a device timestamp."""
    return device_time + offset_ms


def clock_valid(
    device_time: int,
    offset_ms: int | None,
    *,
    floor_ms: int = CLOCK_FLOOR_MS,
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
) -> bool:
    """X-R4: valid unless before ``floor_ms`` or the last measured offset exceeds the skew."""
    if device_time < floor_ms:
        return False
    return offset_ms is None or abs(offset_ms) <= max_skew_ms
