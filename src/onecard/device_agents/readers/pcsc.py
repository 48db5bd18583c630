"""PC/SC reader driver (pyscard): a `CardChannel` on a real or virtual reader.

Owns connecting to a reader by name (waiting for a card to appear, as pcscd polls about every
400 ms), transmitting APDUs, and turning a lost card into `CardGoneError`. pyscard is imported
lazily so the rest of the package works without libpcsclite.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from onecard.device_agents.terminal.channel import CardGoneError

VPCD_READER = "Virtual PCD 00 00"


def list_readers() -> list[str]:
    """Names of the PC/SC readers pcscd currently exposes."""
    from smartcard.System import readers

    return [str(r) for r in readers()]


class PcscChannel:
    """`CardChannel` over pyscard. Use as a context manager or call `close()`."""

    def __init__(self, reader: str = VPCD_READER, *, timeout: float = 5.0) -> None:
        self.reader = reader
        self._conn = _connect_with_retry(reader, timeout)

    def transmit(self, apdu: bytes) -> bytes:
        from smartcard.Exceptions import CardConnectionException

        try:
            data, sw1, sw2 = self._conn.transmit(list(apdu))
        except CardConnectionException as err:
            raise CardGoneError(f"reader {self.reader}: {err}") from err
        return bytes(data) + bytes((sw1, sw2))

    def reconnect(self, timeout: float = 5.0) -> None:
        """Drop the connection and wait for a card in the same reader again."""
        self.close()
        self._conn = _connect_with_retry(self.reader, timeout)

    def close(self) -> None:
        # A card that already left cannot be disconnected; releasing is still required.
        with contextlib.suppress(Exception):
            self._conn.disconnect()
        self._conn.release()

    def __enter__(self) -> PcscChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect_with_retry(reader_name: str, timeout: float) -> Any:
    """Connect to the card in ``reader_name``, retrying every 50 ms until ``timeout``."""
    from smartcard.Exceptions import CardConnectionException, NoCardException
    from smartcard.System import readers

    deadline = time.monotonic() + timeout
    while True:
        matching = [r for r in readers() if str(r).startswith(reader_name)]
        if matching:
            conn = matching[0].createConnection()
            try:
                conn.connect()
                return conn
            except (CardConnectionException, NoCardException):
                conn.release()
        if time.monotonic() >= deadline:
            raise CardGoneError(f"no card in reader {reader_name!r} after {timeout} s")
        time.sleep(0.05)
