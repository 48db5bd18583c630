"""The simulator fleet against a real broker and the platform double: under every fault,
nothing is lost and nothing is stored twice."""

from __future__ import annotations

import threading

from onecard.device_agents.protocol.codes import DeviceKind
from onecard.device_agents.runtime.mqtt import BrokerAddress
from onecard.device_agents.sim.fleet import Fleet, FleetSettings

KINDS = (DeviceKind.POS, DeviceKind.DOOR, DeviceKind.GATE, DeviceKind.BUS)


def run_fleet(broker, tmp_path, *, devices, faults, duration=3.0, during=None):
    fleet = Fleet(
        FleetSettings(
            devices=devices,
            kinds=KINDS,
            broker=BrokerAddress(port=broker.port),
            folder=tmp_path / "fleet",
            faults=frozenset(faults),
            tap_rate=3.0,
            fault_rate=0.4,
            agent={"tap_timeout_s": 0.5, "ack_timeout_s": 2.0, "heartbeat_s": 1.0},
        )
    ).start()
    try:
        if during is not None:
            threading.Timer(duration / 2, during).start()
        fleet.run(duration)
        drained = fleet.drain(timeout=30)
        return drained, fleet.totals()
    finally:
        fleet.stop()


def test_fleet_under_outages_resets_duplicates_reordering_and_power_loss_loses_nothing(
    broker, platform, tmp_path
):
    platform.decide = None  # every tap times out and becomes a stored record
    faults = {"offline", "skew", "clock-reset", "duplicate", "reorder", "power-loss"}

    drained, totals = run_fleet(broker, tmp_path, devices=30, faults=faults)

    print(f"\nfleet totals: {totals}\nplatform: {platform.count()} stored, {platform.uploads} up")
    assert drained
    assert totals["records_created"] > 100
    assert platform.count() == totals["records_created"]
    assert totals["records_acked"] == totals["records_created"]
    assert platform.uploads > platform.count()
    assert totals["duplicates_sent"] > 0
    assert totals["outages"] > 0
    assert totals["power_losses"] > 0
    assert totals["clock_resets"] > 0


def test_a_wiped_store_starts_a_new_epoch_and_loses_only_what_was_unsent(
    broker, platform, tmp_path
):
    platform.decide = None

    drained, totals = run_fleet(broker, tmp_path, devices=20, faults={"wipe", "offline"})

    assert drained
    assert totals["wipes"] > 0
    created, wiped = totals["records_created"], totals["records_wiped"]
    assert created - wiped <= platform.count() <= created
    epochs = {epoch for (_, epoch) in platform.stored}
    assert len(epochs) > 20


def test_fleet_survives_a_broker_restart(broker, platform, tmp_path):
    drained, totals = run_fleet(
        broker, tmp_path, devices=20, faults=set(), duration=3.0, during=broker.restart
    )

    assert drained
    assert totals["connects"] >= 40
    assert platform.count() == totals["records_created"]
