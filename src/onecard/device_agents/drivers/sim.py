"""A simulated reader: credentials are queued by code, decisions and relay pulses recorded."""

from __future__ import annotations

import queue

from onecard.device_agents.protocol.codes import ReaderState
from onecard.device_agents.runtime.agent import LocalDecision, Presented


class SimulatedReader:
    """`ReaderDriver` for tests and the simulator."""

    def __init__(self) -> None:
        self.pending: queue.Queue[Presented] = queue.Queue()
        self.shown: list[LocalDecision] = []
        self.beeps: list[str] = []
        self.relay: list[int] = []
        self.health = ReaderState.OK

    def present(self, presented: Presented) -> None:
        """Put a card on the reader."""
        self.pending.put(presented)

    def read(self, timeout: float) -> Presented | None:
        try:
            return self.pending.get(timeout=timeout)
        except queue.Empty:
            return None

    def show(self, decision: LocalDecision) -> None:
        self.shown.append(decision)
        self.beep("ok" if decision.allow else "deny")

    def beep(self, code: str) -> None:
        self.beeps.append(code)

    def open_relay(self, ms: int) -> None:
        self.relay.append(ms)

    def state(self) -> ReaderState:
        return self.health

    def close(self) -> None:
        """Nothing to release."""
