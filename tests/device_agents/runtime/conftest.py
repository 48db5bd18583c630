"""Fixtures of the agent runtime tests: a private mosquitto, the platform double, agents."""

from __future__ import annotations

import contextlib
import importlib.util
import random
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from onecard.device_agents.protocol.codes import DeviceKind
from onecard.device_agents.runtime.agent import AgentSettings, Handlers
from onecard.device_agents.runtime.clock import DeviceClock
from onecard.device_agents.runtime.host import AgentHost
from onecard.device_agents.runtime.mqtt import BrokerAddress


def _load_double():  # type: ignore[no-untyped-def]
    name = "oc_platform_double"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("platform_double.py")
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


double = _load_double()
TENANT_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


@pytest.fixture
def platform_double():
    """The platform double module (for tests that build their own)."""
    return double


@pytest.fixture
def tenant_key():
    return TENANT_KEY


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    mosq = double.start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield mosq
    mosq.stop()


@pytest.fixture
def platform(broker):
    plat = double.PlatformDouble(broker.port)
    yield plat
    plat.close()
    assert plat.errors == [], "device sent messages the AsyncAPI document refuses"


@pytest.fixture
def make_agent(broker, tmp_path):
    """``make_agent(device_id, **settings)`` → a started `AgentHost` on the private broker."""
    hosts: list[AgentHost] = []

    def make(
        device: str = "pos-1",
        *,
        store: Path | None = None,
        clock: DeviceClock | None = None,
        handlers: Handlers | None = None,
        start: bool = True,
        **settings,
    ) -> AgentHost:
        settings.setdefault("kind", DeviceKind.POS)
        settings.setdefault("tap_timeout_s", 0.5)
        settings.setdefault("hello_ack_timeout_s", 2.0)
        host = AgentHost.open(
            AgentSettings(device_id=device, **settings),
            store or tmp_path / device,
            BrokerAddress(port=broker.port),
            public_key=TENANT_KEY.public_key(),
            clock=clock,
            handlers=handlers,
            rng=random.Random(len(hosts) + 1),
        )
        hosts.append(host)
        if start:
            host.start()
            assert host.wait_online(), "agent did not connect"
        return host

    yield make
    for host in hosts:
        with contextlib.suppress(Exception):  # a test may have stopped it already
            host.stop()
