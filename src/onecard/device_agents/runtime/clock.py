"""The device's own clock, kept apart from the platform's time.

`DeviceClock` reads an injected wall source (milliseconds) plus an adjustment the device made
itself (stepping to the platform's time) or suffered (a simulated skew or a reset to 1970).
"""

from __future__ import annotations

import time
from collections.abc import Callable

WallClock = Callable[[], int]
"""Milliseconds since the Unix epoch."""


def system_ms() -> int:
    """The host's wall clock in milliseconds (the production `WallClock`)."""
    return time.time_ns() // 1_000_000


class DeviceClock:
    """What the device believes the time is."""

    def __init__(self, wall: WallClock = system_ms, *, adjust_ms: int = 0) -> None:
        self._wall = wall
        self.adjust_ms = adjust_ms

    def now_ms(self) -> int:
        """Device time (never negative)."""
        return max(0, self._wall() + self.adjust_ms)

    def step(self, by_ms: int) -> None:
        """Move the clock by ``by_ms`` (a sync correcting it, or a simulated skew)."""
        self.adjust_ms += by_ms

    def reset_to(self, ms: int) -> None:
        """Set the clock to ``ms`` now (a device that lost its RTC boots at 1970)."""
        self.adjust_ms = ms - self._wall()
