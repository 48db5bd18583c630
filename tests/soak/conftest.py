"""The soak's private broker: Mosquitto with the platform's generated config on a free port."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from onecard.platform.devices.broker import EmbeddedBroker, Listener
from onecard.platform.devices.services import all_credentials


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def soak_broker(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> Iterator[Callable[[str], EmbeddedBroker]]:
    """Start a private Mosquitto (password file + ACL of every registered device) that accepts
    the platform with the password given; stopped after the test."""
    started: list[EmbeddedBroker] = []

    def _start(platform_password: str) -> EmbeddedBroker:
        with session_factory() as s:
            devices = all_credentials(s)
        broker = EmbeddedBroker(
            tmp_path / "mqtt",
            Listener(_free_port(), "127.0.0.1"),
            platform_password=platform_password,
            devices=devices,
        )
        broker.start()
        started.append(broker)
        assert broker.kind == "mosquitto", "the soak needs mosquitto (apt-get install mosquitto)"
        return broker

    yield _start
    for b in started:
        b.stop()
