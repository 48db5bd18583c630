"""Benchmark: full purchase transactions per second through the in-process emulators (3DES and
SM4), and APDU round trips through pyscard → pcscd → vpcd → emulator when pcscd is available.

Run: .venv/bin/python bench/bench_emulators.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import time
from datetime import datetime
from pathlib import Path

from onecard.device_agents.emulators.cpu_card import CpuCard
from onecard.device_agents.emulators.personalise import CardSpec, derive_card_keys, personalise
from onecard.device_agents.emulators.psam import Psam, psam_image
from onecard.device_agents.terminal.channel import InProcessChannel
from onecard.device_agents.terminal.psam import PsamSession
from onecard.device_agents.terminal.purchase import purchase
from onecard.keys.algorithms import Algorithm

TERMINAL = bytes.fromhex("112233445566")
MASTERS = {name: os.urandom(16) for name in ("DLK", "DPK", "DTK")}
NOW = datetime(2024, 3, 1, 10, 15, 0)


def _card(algorithm: Algorithm) -> CpuCard:
    spec = CardSpec("mohurd", algorithm, bytes.fromhex("1000000012345678"),
                    bytes.fromhex("2000FF0000000000"), balance=2_000_000_000)  # fmt: skip
    return CpuCard(personalise(spec, derive_card_keys(spec, MASTERS)))


def bench_purchases(algorithm: Algorithm, seconds: float) -> float:
    """Purchases per second (SELECT, READ 0015, INIT, PSAM 80 70, DEBIT, PSAM 80 72)."""
    card = InProcessChannel(_card(algorithm))
    psam = PsamSession(InProcessChannel(Psam(psam_image({algorithm: MASTERS}, terminal=TERMINAL))))
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        purchase(card, psam, amount=1, now=NOW)
        done += 1
    return done / (time.perf_counter() - start)


def bench_pcsc(count: int) -> tuple[float, float] | None:
    """Median and p99 SELECT round trip in µs through pcscd, or None without pcscd/pyscard."""
    try:
        from onecard.device_agents.readers.pcsc import PcscChannel
        from onecard.device_agents.readers.vpcd import VpcdTransport
    except ImportError:
        return None
    if shutil.which("pcscd") is None:
        return None
    proc = None
    if not Path("/run/pcscd/pcscd.comm").exists():
        proc = subprocess.Popen(["pcscd", "--foreground"], stdout=subprocess.DEVNULL)
        time.sleep(0.3)
    slot = VpcdTransport(_card(Algorithm.TDES)).start()
    try:
        with PcscChannel() as channel:
            select = bytes.fromhex("00A4040009A00000000386980701")
            samples = []
            for _ in range(count):
                t0 = time.perf_counter()
                channel.transmit(select)
                samples.append((time.perf_counter() - t0) * 1e6)
    finally:
        slot.stop()
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--apdus", type=int, default=1000)
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")  # fmt: skip
    for algorithm in Algorithm:
        rate = bench_purchases(algorithm, args.seconds)
        print(f"in-process purchase ({algorithm.value}): {rate:,.0f} transactions/s")
    pcsc = bench_pcsc(args.apdus)
    if pcsc is None:
        print("pcscd round trip: skipped (pcscd or pyscard not installed)")
    else:
        print(f"pcscd SELECT round trip over {args.apdus}: median {pcsc[0]:.0f} µs, "
              f"p99 {pcsc[1]:.0f} µs")  # fmt: skip


if __name__ == "__main__":
    main()
