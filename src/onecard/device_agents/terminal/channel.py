"""The channel a terminal flow talks to a card (or PSAM) through.

Owns the `CardChannel` protocol (`transmit(apdu) -> response incl. SW`), the error a lost card
raises (`CardGoneError`), the in-process channel to an emulator, and `Exchange`, a helper that
checks status words and names the step that failed. PC/SC channels live in `readers.pcsc`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from onecard.device_agents.emulators.cpu_card import CardTorn


@runtime_checkable
class CardChannel(Protocol):
    """Anything that sends a command APDU and returns response data ‖ SW1 SW2.

    Raises CardGoneError when the card left the field or lost power before answering.
    """

    def transmit(self, apdu: bytes) -> bytes: ...


class Emulator(Protocol):
    """What an in-process channel drives: a card, PSAM or M1 emulator."""

    def process_apdu(self, apdu: bytes) -> bytes: ...

    def power_off(self) -> None: ...


class CardGoneError(Exception):
    """The card answered nothing (removed, torn, reader error). The transaction may or may not
    have committed on the card; only a recovery can tell."""


class StatusError(Exception):
    """The card answered a status word other than the expected one."""

    def __init__(self, step: str, sw: bytes) -> None:
        self.step, self.sw = step, sw
        super().__init__(f"{step}: card answered {sw.hex().upper()}")


class InProcessChannel:
    """`CardChannel` to an emulator in this process. A simulated tear becomes CardGoneError."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def transmit(self, apdu: bytes) -> bytes:
        try:
            return self.emulator.process_apdu(apdu)
        except CardTorn as err:
            raise CardGoneError("card lost power during the command") from err

    def reconnect(self) -> None:
        """Power the card up again (the terminal's field comes back)."""
        self.emulator.power_off()


@dataclass(frozen=True, slots=True)
class Response:
    data: bytes
    sw: bytes


class Exchange:
    """Send commands on a channel and check their status words."""

    def __init__(self, channel: CardChannel) -> None:
        self.channel = channel

    def send(self, step: str, apdu: bytes) -> Response:
        raw = self.channel.transmit(apdu)
        if len(raw) < 2:
            raise StatusError(step, raw)
        return Response(raw[:-2], raw[-2:])

    def ok(self, step: str, apdu: bytes, length: int | None = None) -> bytes:
        """Send and require 90 00 (and ``length`` data bytes if given); return the data."""
        response = self.send(step, apdu)
        if response.sw != b"\x90\x00":
            raise StatusError(step, response.sw)
        if length is not None and len(response.data) != length:
            raise StatusError(step, b"\x67\x00")
        return response.data
