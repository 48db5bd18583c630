"""Simulated POS terminals run the canteen POS personality, with the MAC key the fleet is
given; other kinds keep the generic agent."""

from __future__ import annotations

from onecard.device_agents.personalities.pos_records import PosKey
from onecard.device_agents.protocol.codes import DeviceKind
from onecard.device_agents.runtime.mqtt import BrokerAddress
from onecard.device_agents.runtime.pos_terminal import PosTerminal
from onecard.device_agents.sim.fleet import Fleet, FleetSettings
from onecard.keys.algorithms import Algorithm

KEY = PosKey(Algorithm.SM4, 1, bytes(range(16)))


def test_fleet_pos_terminals_load_the_pos_personality_with_their_keys(tmp_path):
    fleet = Fleet(
        FleetSettings(
            devices=3,
            kinds=(DeviceKind.POS, DeviceKind.DOOR),
            broker=BrokerAddress(port=1),  # never connected: the fleet is not started
            folder=tmp_path / "fleet",
            pos_keys={"sim-pos-0000": KEY},
        )
    )
    try:
        personalities = {t.device: t.agent.personality for t in fleet.terminals}
    finally:
        fleet.loop.stop()
        fleet.conn.close()

    keyed, door, keyless = personalities.values()
    assert list(personalities) == ["sim-pos-0000", "sim-door-0001", "sim-pos-0002"]
    assert isinstance(keyed, PosTerminal)
    assert keyed.key == KEY
    assert door is None
    assert isinstance(keyless, PosTerminal)
    assert keyless.key is None
