"""A PC/SC reader (pcscd) as a credential source: the card's UID by ``FF CA 00 00 00``
(PC/SC part 3 GET DATA), read once per card presentation."""

from __future__ import annotations

import time

from onecard.device_agents.protocol.codes import ReaderState
from onecard.device_agents.readers.pcsc import VPCD_READER, PcscChannel, list_readers
from onecard.device_agents.runtime.agent import LocalDecision, Presented
from onecard.device_agents.terminal.channel import CardGoneError

GET_UID = bytes.fromhex("FFCA000000")


def read_uid(channel: PcscChannel) -> str | None:
    """The UID (hex) of the card on ``channel``, or None if the reader refuses GET DATA."""
    answer = channel.transmit(GET_UID)
    if len(answer) < 2 or answer[-2:] != b"\x90\x00" or len(answer) == 2:
        return None
    return answer[:-2].hex()


class PcscReader:
    """`ReaderDriver` for one PC/SC reader; a card must leave before it is read again."""

    def __init__(self, reader: str = VPCD_READER, *, amount: int | None = None) -> None:
        self.reader = reader
        self.amount = amount
        self._last_uid: str | None = None
        self.shown: list[LocalDecision] = []

    def read(self, timeout: float) -> Presented | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with PcscChannel(self.reader, timeout=max(0.05, deadline - time.monotonic())) as ch:
                    uid = read_uid(ch)
            except CardGoneError:
                self._last_uid = None
                continue
            if uid is not None and uid != self._last_uid and len(uid) in (8, 14, 20):
                self._last_uid = uid
                return Presented.uid(uid, self.amount)
            time.sleep(0.1)
        return None

    def show(self, decision: LocalDecision) -> None:
        self.shown.append(decision)

    def beep(self, code: str) -> None:
        """A PC/SC reader has no standard buzzer command; nothing to do."""

    def open_relay(self, ms: int) -> None:
        """A PC/SC reader has no relay; a door controller would drive one here."""

    def state(self) -> ReaderState:
        try:
            return ReaderState.OK if self.reader in " ".join(list_readers()) else ReaderState.ABSENT
        except Exception:  # pcscd down counts as a faulty reader, not an agent crash
            return ReaderState.FAULT

    def close(self) -> None:
        """Connections are opened per read."""
