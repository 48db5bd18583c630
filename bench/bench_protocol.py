"""Device protocol figures: blacklist snapshot size and device lookup for 1,000,000 entries,
the raw broker round trip on a private Mosquitto (the physical limit of a tap), and a simulated
fleet's connect time and CPU on this machine. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_protocol.py [--devices 500]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from onecard.device_agents.protocol.blacklist import (
    CARD_NO_BASE,
    SnapshotAssembler,
    SortedKeySet,
    encode_keys,
    snapshot_chunks,
)
from onecard.device_agents.protocol.codec import decode, encode
from onecard.device_agents.protocol.codes import DeviceKind
from onecard.device_agents.protocol.topics import Topic
from onecard.device_agents.runtime.mqtt import BrokerAddress
from onecard.device_agents.sim.broker import PrivateMosquitto
from onecard.device_agents.sim.fleet import Fleet, FleetSettings


def bench_blacklist() -> None:
    rng = random.Random(7)
    uids: set[int] = set()
    while len(uids) < 1_000_000:
        uids.add(rng.getrandbits(32))
    t0 = time.perf_counter()
    chunks = snapshot_chunks("blacklist", 1, uids)
    t1 = time.perf_counter()
    assembler = SnapshotAssembler()
    keys = None
    for chunk in chunks:
        keys = assembler.add(decode(Topic.LISTS, encode(chunk)))
    t2 = time.perf_counter()
    assert keys is not None
    lookup = SortedKeySet.from_sorted(keys)
    probes = [rng.getrandbits(32) for _ in range(200_000)]
    t3 = time.perf_counter()
    hits = sum(p in lookup for p in probes)
    t4 = time.perf_counter()
    size = sum(len(c.data) for c in chunks) * 3 // 4
    wire = sum(len(encode(c)) for c in chunks)
    print(
        f"blacklist 1,000,000 random 32-bit UIDs: zdv1 {size / 1e6:.2f} MB "
        f"({size * 8 / 1e6:.1f} bits/entry), {len(chunks)} MQTT chunks, {wire / 1e6:.2f} MB "
        f"on the wire (base64 JSON)"
    )
    print(
        f"  encode {t1 - t0:.2f} s (platform), decode+verify {t2 - t1:.2f} s (device), "
        f"lookup {(t4 - t3) / len(probes) * 1e6:.2f} µs ({hits} hits), memory 8 MB"
    )
    cards = {CARD_NO_BASE + n for n in rng.sample(range(20_000_000), 1_000_000)}
    print(
        f"blacklist 1,000,000 card numbers (random among 20 M issued): "
        f"{len(encode_keys(cards)) / 1e3:.0f} kB zdv1"
    )


def bench_round_trip(port: int, n: int = 2000) -> None:
    got = threading.Event()

    def client(name: str) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        c.on_connect = lambda cl, *_: cl.socket().setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        c.connect("127.0.0.1", port)
        c.loop_start()
        return c

    responder, requester = client("bench-resp"), client("bench-req")
    responder.on_message = lambda cl, _u, m: cl.publish("oc/v1/bench/down/tap", m.payload, 1)
    requester.on_message = lambda *_: got.set()
    responder.subscribe("oc/v1/bench/up/tap", 1)
    requester.subscribe("oc/v1/bench/down/tap", 1)
    time.sleep(0.3)
    payload = b'{"v":1,"req_id":"r","credential":{"kind":"uid","value":"04a1b2c3"},"device_time":1}'
    samples = []
    for i in range(n + 50):
        got.clear()
        t = time.perf_counter()
        requester.publish("oc/v1/bench/up/tap", payload, 1)
        got.wait(5)
        if i >= 50:
            samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    print(
        f"broker round trip (private mosquitto, QoS 1, TCP_NODELAY both sides, {n} trips): "
        f"p50 {statistics.median(samples):.2f} ms, p99 {samples[int(n * 0.99)]:.2f} ms"
    )
    for c in (responder, requester):
        c.disconnect()
        c.loop_stop()


def bench_fleet(port: int, devices: int, folder: Path) -> None:
    fleet = Fleet(
        FleetSettings(
            devices=devices,
            kinds=(DeviceKind.POS, DeviceKind.DOOR, DeviceKind.GATE),
            broker=BrokerAddress(port=port),
            folder=folder,
            tap_rate=0.2,
            agent={"tap_timeout_s": 1.0},
        )
    )
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    fleet.start()
    while fleet.online() < devices and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    t1 = time.monotonic()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    fleet.run(10)
    cpu2 = resource.getrusage(resource.RUSAGE_SELF)
    totals = fleet.totals()
    fleet.stop()
    busy = (cpu2.ru_utime + cpu2.ru_stime) - (cpu1.ru_utime + cpu1.ru_stime)
    print(
        f"fleet of {devices} terminals, one process: all online in {t1 - t0:.1f} s; then 10 s "
        f"at {devices * 0.2:.0f} taps/s (no platform answering → offline records): "
        f"{busy / 10 * 100:.0f}% of one core, {totals['records_created']} records stored"
    )
    del cpu0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=500)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )
    bench_blacklist()
    with tempfile.TemporaryDirectory() as tmp, PrivateMosquitto(Path(tmp) / "mosq") as broker:
        bench_round_trip(broker.port)
        bench_fleet(broker.port, args.devices, Path(tmp) / "fleet")


if __name__ == "__main__":
    main()
