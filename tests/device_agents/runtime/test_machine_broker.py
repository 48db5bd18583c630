"""One agent against the machine's own Mosquitto on 127.0.0.1:1883 (must be running)."""

from __future__ import annotations

import random
import secrets

import pytest

from onecard.device_agents.protocol.codes import DeviceKind
from onecard.device_agents.runtime.agent import AgentSettings, Presented
from onecard.device_agents.runtime.host import AgentHost
from onecard.device_agents.runtime.mqtt import BrokerAddress
from onecard.device_agents.sim.broker import port_open


def test_agent_uploads_through_the_machine_mosquitto(tmp_path, platform_double):
    if not port_open(1883):
        pytest.fail("the machine's Mosquitto is not listening on 127.0.0.1:1883")
    device = f"t-{secrets.token_hex(6)}"
    platform = platform_double.PlatformDouble(1883, prefix=device)
    platform.decide = None
    host = AgentHost.open(
        AgentSettings(device_id=device, kind=DeviceKind.DOOR, tap_timeout_s=0.3),
        tmp_path / device,
        BrokerAddress(port=1883),
        rng=random.Random(3),
    ).start()
    try:
        assert host.wait_online()
        decision = host.tap(Presented.uid("04a1b2c3"))
        assert not decision.online
        assert platform.wait_until(lambda: platform.count(device) == 1)
        assert platform.wait_until(lambda: host.agent.store.unsent_count() == 0)
    finally:
        host.stop()
        platform.client.publish(f"oc/v1/{device}/state", b"", retain=True).wait_for_publish(5)
        platform.close()
    assert platform.errors == []
