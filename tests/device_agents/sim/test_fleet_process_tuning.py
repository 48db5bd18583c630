"""``tune_for_the_fleet``: the terminals a fleet built are frozen out of the collector's scans
(checked in a fresh interpreter: the setting is process-wide), and each terminal's MQTT client
has the garbage-free topic matcher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from onecard.device_agents.protocol.codes import DeviceKind
from onecard.device_agents.runtime.mqtt import BrokerAddress
from onecard.device_agents.runtime.paho_matcher import AcyclicMatcher
from onecard.device_agents.sim.fleet import Fleet, FleetSettings

PROBE = """
import gc, json, sys
from pathlib import Path
from onecard.device_agents.protocol.codes import DeviceKind
from onecard.device_agents.runtime.mqtt import BrokerAddress
from onecard.device_agents.sim.fleet import Fleet, FleetSettings, tune_for_the_fleet
fleet = Fleet(FleetSettings(devices=20, kinds=(DeviceKind.DOOR,), broker=BrokerAddress(port=1),
                            folder=Path(sys.argv[1])))
tune_for_the_fleet()
scanned = {id(o) for o in gc.get_objects()}
print(json.dumps({
    "frozen": gc.get_freeze_count(),
    "terminals_scanned": sum(id(t.agent) in scanned or id(t.link.client) in scanned
                             for t in fleet.terminals),
    "enabled": gc.isenabled(),
}))
"""


def test_a_tuned_fleets_terminals_are_out_of_the_collectors_scans(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "fleet")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    got = json.loads(out.stdout)
    assert got["frozen"] > 10_000
    assert got["terminals_scanned"] == 0
    assert got["enabled"]  # new garbage is still collected


def test_every_terminals_client_has_the_acyclic_matcher(tmp_path: Path) -> None:
    fleet = Fleet(
        FleetSettings(
            devices=3, kinds=(DeviceKind.POS,), broker=BrokerAddress(port=1), folder=tmp_path
        )
    )
    try:
        for terminal in fleet.terminals:
            assert isinstance(terminal.link.client._on_message_filtered, AcyclicMatcher)
    finally:
        fleet.loop.stop()  # never started: closes its selector and wake-up sockets
        fleet.conn.close()
