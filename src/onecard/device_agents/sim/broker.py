"""A private Mosquitto broker on a free loopback port, for tests, benchmarks and demos.

Configured as the toolchain notes require: ``set_tcp_nodelay true`` (else 44–88 ms per
request/response) and a large ``max_queued_messages`` (the default 1000 silently drops QoS 1
messages for a slow subscriber).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

CONF = """\
per_listener_settings false
listener {port} 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
set_tcp_nodelay true
max_queued_messages 100000
max_inflight_messages 100
"""


class BrokerError(RuntimeError):
    """Mosquitto is missing or did not start."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True if something accepts connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class PrivateMosquitto:
    """``mosquitto -c <conf>`` as a child process; `restart` keeps the port."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )

    def start(self, timeout: float = 5.0) -> PrivateMosquitto:
        """Start and wait until the port accepts connections; `BrokerError` otherwise."""
        if self.binary is None:
            raise BrokerError("mosquitto not installed: apt-get install -y mosquitto")
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "mosquitto.conf"
        conf.write_text(CONF.format(port=self.port), encoding="utf-8")
        with open(self.folder / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - fixed binary, generated config
                [self.binary, "-c", str(conf)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                text = (self.folder / "mosquitto.log").read_text(errors="replace")[-2000:]
                raise BrokerError(f"mosquitto did not start on {self.port}: {text}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Terminate the broker and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port (clients see the broker go and come back)."""
        self.stop()
        self.start()

    def __enter__(self) -> PrivateMosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
