"""Keyboard-wedge card readers and QR scanners: one credential per line on a text stream
(stdin, a serial device opened as text, or a file)."""

from __future__ import annotations

import queue
import sys
import threading
from typing import TextIO

from onecard.device_agents.drivers.base import parse_credential_text
from onecard.device_agents.protocol.codes import ReaderState
from onecard.device_agents.runtime.agent import LocalDecision, Presented


class LineReader:
    """`ReaderDriver` over a text stream; decisions are written to ``out``."""

    def __init__(self, stream: TextIO | None = None, out: TextIO | None = None) -> None:
        self.stream = stream or sys.stdin
        self.out = out or sys.stdout
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._eof = False
        threading.Thread(target=self._pump, name="oc-wedge", daemon=True).start()

    def _pump(self) -> None:
        for line in self.stream:
            self._lines.put(line)
        self._lines.put(None)

    def read(self, timeout: float) -> Presented | None:
        """The next parsable line's credential (unparsable lines are skipped)."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is None:
            self._eof = True
            return None
        return parse_credential_text(line)

    @property
    def at_end(self) -> bool:
        """The stream ended."""
        return self._eof

    def show(self, decision: LocalDecision) -> None:
        where = "online" if decision.online else "offline"
        verdict = "ALLOW" if decision.allow else "DENY"
        self.out.write(f"{verdict} {decision.reason.value} ({where}) {decision.display}\n")
        self.out.flush()

    def beep(self, code: str) -> None:
        self.out.write("\a" if code == "ok" else "\a\a")

    def open_relay(self, ms: int) -> None:
        self.out.write(f"RELAY {ms} ms\n")
        self.out.flush()

    def state(self) -> ReaderState:
        return ReaderState.OK

    def close(self) -> None:
        """The stream belongs to the caller."""
