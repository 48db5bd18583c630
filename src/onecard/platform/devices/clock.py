"""Clock synchronisation (``up/time`` → ``down/time``), NTP-style.

The device sends ``t0`` (its clock); the platform answers ``t1`` (receive) and ``t2`` (send),
both in ms of platform time; the device computes its offset and round trip with
`onecard.device_agents.protocol.timesync.measure`.
"""

from __future__ import annotations

from datetime import datetime

from onecard.device_agents.protocol.timesync import ClockSample, measure
from onecard.platform.devices.wire import TimeResponse


def to_ms(when: datetime) -> int:
    """Milliseconds since the Unix epoch."""
    return int(when.timestamp() * 1000)


def answer(t0: int, received: datetime, sending: datetime) -> TimeResponse:
    """The ``down/time`` message for a request with device time ``t0``."""
    return TimeResponse(t0=t0, t1=to_ms(received), t2=to_ms(sending))


def offset_ms(t0: int, t1: int, t2: int, t3: int) -> ClockSample:
    """What the device computes: offset to add to its clock (platform − device), round trip."""
    return measure(t0, t1, t2, t3)
