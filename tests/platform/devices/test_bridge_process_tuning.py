"""``tune_for_the_bridge``: what ``onecard bridge`` and ``onecard run`` set for their process
(checked in a fresh interpreter: the settings are process-wide), and the bridge's MQTT client's
garbage-free topic matcher."""

from __future__ import annotations

import json
import subprocess
import sys

from sqlalchemy.orm import Session, sessionmaker

from onecard.device_agents.runtime.paho_matcher import AcyclicMatcher
from onecard.platform.devices.bridge import Bridge, Connection
from onecard.platform.devices.runtime import GC_YOUNG_THRESHOLD, SWITCH_INTERVAL
from onecard.platform.secrets import SecretBox

PROBE = """
import gc, json, sys
default_older = gc.get_threshold()[1:]
from onecard.platform.devices.runtime import tune_for_the_bridge
tune_for_the_bridge()
print(json.dumps({
    "switch": sys.getswitchinterval(),
    "threshold": gc.get_threshold(),
    "default_older": default_older,
    "frozen": gc.get_freeze_count(),
    "enabled": gc.isenabled(),
}))
"""


def test_the_bridge_process_switches_threads_sooner_and_collects_less_often() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    got = json.loads(out.stdout)
    assert got["switch"] == SWITCH_INTERVAL < 0.005  # Python's default is 5 ms
    assert got["threshold"][0] == GC_YOUNG_THRESHOLD
    assert got["threshold"][1:] == got["default_older"]  # older generations as they were
    assert got["enabled"]  # cyclic garbage is still collected
    assert got["frozen"] > 10_000  # what the imports made is out of the collector's scans


def test_the_bridges_client_leaves_no_garbage_cycle_per_message(
    session_factory: sessionmaker[Session],
) -> None:
    """paho's own topic matcher leaves a cycle per received message (`paho_matcher`)."""
    bridge = Bridge(session_factory, Connection(), box=SecretBox("tuning-secret-0123456789abcdef"))
    assert isinstance(bridge.client._on_message_filtered, AcyclicMatcher)
