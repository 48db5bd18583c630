"""Starting the device side of the platform: embedded broker, bridge, task runner.

``onecard run`` calls :func:`start_device_services` (and ``.stop()`` on exit); ``onecard
bridge`` calls :func:`run_bridge_forever`. Both take the process :class:`Settings`.
"""

from __future__ import annotations

import gc
import logging
import os
import secrets
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from onecard.config import Settings
from onecard.platform.clock import utcnow
from onecard.platform.db.engine import make_engine, make_session_factory
from onecard.platform.devices import tasks
from onecard.platform.devices.bridge import Bridge, Connection
from onecard.platform.devices.broker import PLATFORM_USER, EmbeddedBroker, Listener
from onecard.platform.devices.services import all_credentials
from onecard.platform.secrets import SecretBox, load_or_create_secret_key

log = logging.getLogger(__name__)
# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms).
SWITCH_INTERVAL = 0.0005
# Allocations between young-generation collections (Python's default: 700).
GC_YOUNG_THRESHOLD = 50_000


def data_folder(settings: Settings) -> Path:
    """``var/`` beside the SQLite file (or ``./var``): where embedded state lives."""
    url = settings.database.url
    return Path(url.split("///", 1)[1]).parent if url.startswith("sqlite:///") else Path("var")


def secret_box(settings: Settings) -> SecretBox:
    """The platform's SecretBox (same key as the web app's)."""
    key = settings.security.secret_key or load_or_create_secret_key(
        data_folder(settings) / "secret.key"
    )
    return SecretBox(key)


def _platform_password(folder: Path) -> str:
    path = folder / "platform.secret"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    folder.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(password)
    return password


def connection(
    settings: Settings,
    *,
    tls_ca: str | None = None,
    client_id: str = "",
    share_group: str = "bridge",
) -> Connection:
    """How a bridge of this installation reaches the broker."""
    m = settings.mqtt
    username, password = m.username, m.password
    if m.embedded and not username:
        username, password = PLATFORM_USER, _platform_password(data_folder(settings) / "mqtt")
    return Connection(
        host=m.host,
        port=m.port,
        username=username,
        password=password,
        tls_ca=tls_ca,
        client_id=client_id or f"onecard-bridge-{socket.gethostname()}",
        share_group=share_group,
    )


@dataclass
class DeviceServices:
    """What :func:`start_device_services` started; ``stop()`` ends all of it."""

    bridge: Bridge
    broker: EmbeddedBroker | None
    sessions: sessionmaker[Session]
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def stop(self) -> None:
        """Stop the housekeeping thread, the bridge and the embedded broker."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.bridge.stop()
        if self.broker is not None:
            self.broker.stop()

    def housekeeping(self, interval: float = 5.0) -> None:
        """Every ``interval`` s: reload broker credentials (embedded), run due tasks."""
        while not self._stop.wait(interval):
            try:
                self.tick()
            except Exception:
                log.exception("device housekeeping failed")

    def tick(self) -> None:
        """One housekeeping round."""
        with self.sessions() as session:
            if self.broker is not None:
                self.broker.reload(all_credentials(session))
            tasks.run_due(session, now=utcnow())
            session.commit()


def tune_for_the_bridge() -> None:
    """Tune this process (the whole process: call it once, after start-up) for the bridge.

    - **Thread switches.** A thread waiting for the GIL gets it after 0.5 ms instead of 5. A
      bridge worker gives up the GIL for every database round trip and must win it back from
      the MQTT network thread and the other worker; with the default, each of a tap's four or
      five round trips could wait up to 5 ms for it. Device bench, PostgreSQL, 500 taps/s,
      four alternating pairs of runs: tap p50 25-31 ms with the default against 5-28 ms, p99
      63-248 against 22-146 ms (docs/devices.md, "Device benchmarks").
    - **Garbage collection.** What start-up created (modules, mappers, compiled statements) is
      frozen out of the collector's scans, and the young generation is collected every 50,000
      allocations instead of 700: decoding a batch of records allocates thousands of objects,
      and with the defaults the collections cost the bridge 4.1-5.5 s of CPU in a bench run
      of about two minutes (the older generations' scans of the whole heap paused it for up
      to 0.22 s); frozen, with this threshold, 1.3 s. The older generations keep their
      thresholds, so cyclic garbage is still collected.
    """
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD)


def bridge_sessions(settings: Settings) -> sessionmaker[Session]:
    """Sessions on an engine of its own with the hot-path profile (``make_engine``)."""
    return make_session_factory(make_engine(settings.database.url, hot_path=True))


def start_device_services(settings: Settings, *, registry: Any = None) -> DeviceServices:
    """Start the embedded broker (when ``mqtt.embedded``), a bridge thread and the task runner.

    This is what ``onecard run`` calls after migrating the database.
    """
    sessions = bridge_sessions(settings)
    broker = None
    if settings.mqtt.embedded:
        folder = data_folder(settings) / "mqtt"
        with sessions() as session:
            creds = all_credentials(session)
        broker = EmbeddedBroker(
            folder,
            Listener(settings.mqtt.port, settings.mqtt.host),
            platform_password=_platform_password(folder),
            devices=creds,
        )
        broker.start()
    bridge = Bridge(sessions, connection(settings), box=secret_box(settings), registry=registry)
    tune_for_the_bridge()
    bridge.start()
    services = DeviceServices(bridge, broker, sessions)
    services._thread = threading.Thread(
        target=services.housekeeping, name="onecard-devices", daemon=True
    )
    services._thread.start()
    return services


def run_bridge_forever(
    settings: Settings,
    stop: threading.Event,
    *,
    tls_ca: str | None = None,
    client_id: str = "",
    share_group: str = "bridge",
    registry: Any = None,
) -> None:
    """Run one bridge (``onecard bridge``) until ``stop`` is set."""
    sessions = bridge_sessions(settings)
    bridge = Bridge(
        sessions,
        connection(settings, tls_ca=tls_ca, client_id=client_id, share_group=share_group),
        box=secret_box(settings),
        registry=registry,
    )
    tune_for_the_bridge()
    bridge.start()
    log.info("bridge running (client id %s)", bridge.conn.client_id)
    stop.wait()
    bridge.stop()
