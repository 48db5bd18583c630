"""vpcd transport: connect an emulator to vsmartcard's vpcd socket as a virtual card.

Owns the vpcd wire protocol (toolchain.md §1): a TCP client to vpcd (default 127.0.0.1:35963),
frames of a 2-byte big-endian length and payload; 1-byte control frames 00 off, 01 on, 02 reset
(no reply) and 04 get ATR (reply: the ATR); anything else is a command APDU. Latency: TCP_NODELAY,
TCP_QUICKACK before every recv (Linux clears it) and one `sendall` per reply, otherwise Debian's
vpcd and delayed ACKs cost ~44 ms per APDU. Closing the socket is a card removal; a simulated
tear (CardTorn) removes the card without answering.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from typing import Protocol

from onecard.device_agents.emulators.cpu_card import CardTorn

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 35963
CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4
log = logging.getLogger(__name__)


class VirtualCard(Protocol):
    """What vpcd can hold: an emulator with an ATR, an APDU handler and a power switch."""

    atr: bytes

    def process_apdu(self, apdu: bytes) -> bytes: ...

    def power_off(self) -> None: ...


def parse_endpoint(text: str) -> tuple[str, int]:
    """`HOST:PORT` (or just `HOST`) → (host, port). Raises ValueError."""
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(DEFAULT_PORT))
    return host or DEFAULT_HOST, int(port)


class VpcdTransport:
    """Runs one emulator in a vpcd slot; `start()` inserts the card, `stop()` removes it."""

    def __init__(self, card: VirtualCard, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
        self.card, self.host, self.port = card, host, port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.torn = threading.Event()

    def start(self) -> VpcdTransport:
        """Connect to vpcd (the card appears in the reader) and serve in a daemon thread."""
        sock = socket.create_connection((self.host, self.port), timeout=5)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="vpcd-card", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Connect and serve in the calling thread until vpcd closes the connection."""
        self.start()
        assert self._thread is not None
        self._thread.join()

    def stop(self) -> None:
        """Remove the card: close the socket and wait for the serving thread."""
        self._close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2)

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _serve(self) -> None:
        try:
            while self._sock is not None:
                message = self._receive_frame(self._sock)
                reply = self._handle(message)
                if reply is not None:
                    self._sock.sendall(struct.pack(">H", len(reply)) + reply)
        except CardTorn:
            self.torn.set()  # power lost mid-command: the card leaves without answering
        except (OSError, ConnectionError):
            pass
        finally:
            self._close()

    def _handle(self, message: bytes) -> bytes | None:
        if len(message) != 1:
            return self.card.process_apdu(message)
        if message[0] == CTRL_ATR:
            return self.card.atr
        if message[0] in (CTRL_OFF, CTRL_RESET):
            self.card.power_off()
        return None

    @staticmethod
    def _receive_frame(sock: socket.socket) -> bytes:
        (length,) = struct.unpack(">H", _recv_exact(sock, 2))
        return _recv_exact(sock, length) if length else b""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)  # cleared by Linux each time
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("vpcd closed the connection")
        buf += chunk
    return bytes(buf)
