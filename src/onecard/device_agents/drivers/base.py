"""The reader driver interface and the parsing of a credential typed or scanned as text."""

from __future__ import annotations

import re
from typing import Protocol

from onecard.device_agents.protocol.codes import CredentialKind, ReaderState
from onecard.device_agents.protocol.messages import Credential
from onecard.device_agents.runtime.agent import LocalDecision, Presented

_UID = re.compile(r"(?:[0-9a-fA-F]{8}|[0-9a-fA-F]{14}|[0-9a-fA-F]{20})")


class ReaderDriver(Protocol):
    """A card reader, QR scanner or keypad with a display, buzzer and relay."""

    def read(self, timeout: float) -> Presented | None:
        """The next credential, or None after ``timeout`` seconds."""

    def show(self, decision: LocalDecision) -> None:
        """Display a decision."""

    def beep(self, code: str) -> None:
        """Sound ``ok`` or ``deny`` (or another named pattern)."""

    def open_relay(self, ms: int) -> None:
        """Energise the door/gate relay for ``ms`` milliseconds."""

    def state(self) -> ReaderState:
        """Health for heartbeats."""

    def close(self) -> None:
        """Release the hardware."""


def parse_credential_text(text: str, amount: int | None = None) -> Presented | None:
    """A line from a wedge reader or scanner: ``uid:HEX``, ``card:DIGITS``, ``qr:TEXT``,
    ``plate:TEXT``, or bare text (hex of a UID length → uid, digits → card number, else QR).
    An optional ``@AMOUNT`` suffix (fen) makes it a sale: ``04a1b2c3@1200``."""
    text = text.strip()
    if not text:
        return None
    if "@" in text and text.rsplit("@", 1)[1].isdigit():
        text, money = text.rsplit("@", 1)
        amount = int(money)
    kind_name, _, value = text.partition(":") if ":" in text else ("", "", text)
    kinds = {"uid": CredentialKind.UID, "card": CredentialKind.CARD_NO, "qr": CredentialKind.QR}
    kinds["plate"] = CredentialKind.PLATE
    if kind_name in kinds:
        kind = kinds[kind_name]
    elif _UID.fullmatch(value):
        kind = CredentialKind.UID
    elif value.isdigit():
        kind = CredentialKind.CARD_NO
    else:
        kind, value = CredentialKind.QR, text
    if kind is CredentialKind.UID:
        value = value.lower()
    try:
        return Presented(Credential(kind=kind, value=value[:256]), amount)
    except ValueError:
        return None
