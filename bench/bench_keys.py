"""Key service throughput: raw block-cipher rate, the TAC "physical limit", measured TAC checks.

Run: ``.venv/bin/python bench/bench_keys.py`` (single process; the measured rates are one
thread = one core). Prints, for 3DES and SM4:

* raw single-block ECB call rate with a reused encryptor through ``cryptography`` (the
  acceptance goal's "raw cipher speed", unchanged definition);
* block operations per purchase-TAC verification at the clearing centre with the issuer-level
  key cached: card diversification (3DES 2 blocks, SM4 1) + MAC over the 22-byte TAC input
  (3DES 3 blocks, SM4 2), and the "physical limit" = raw rate / those block operations;
* measured ``SoftHsm.verify_tacs`` rate (the C extension ``onecard.keys._tacbatch``) for
  two-level keys (issuer-level key cached, records batched by key) when every record is from a
  different card, and when cards have 4 records each (a day of rides), with the % of the limit;
* for context (not the goal's definition): the same single-block rate measured from C inside
  the extension (one ``EVP_EncryptUpdate`` per block, no Python call per block) and the % of
  the limit derived from it, the pure-Python reference path ``_verify_tacs_python``, and the
  aggregate rate of one thread per core calling ``verify_tacs`` at once.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.ciphers.algorithms import SM4

from onecard.keys import _tacbatch
from onecard.keys import macdata as md
from onecard.keys.algorithms import Algorithm, diversify, mac, tac_key
from onecard.keys.hsm import KeyRef, TacCheck
from onecard.keys.softhsm import SoftHsm, split_key

DIV_OPS = {Algorithm.TDES: 2, Algorithm.SM4: 1}  # card-level diversification
MAC_OPS = {Algorithm.TDES: 3, Algorithm.SM4: 2}  # MAC over the 22-byte purchase TAC input
BLOCK_OPS = {a: DIV_OPS[a] + MAC_OPS[a] for a in Algorithm}
ISSUER = bytes.fromhex("2000FF0000000000")
RECORDS = 20_000
ROUNDS = 5


def best_rate(fn: Callable[[], int], rounds: int = ROUNDS) -> float:
    """Operations per second of the fastest of ``rounds`` runs (``fn`` returns its op count)."""
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        ops = fn()
        best = max(best, ops / (time.perf_counter() - start))
    return best


def raw_block_rate(alg: Algorithm) -> float:
    """Single-block ECB encryptions per second through one reused encryptor."""
    if alg is Algorithm.TDES:
        enc = Cipher(TripleDES(os.urandom(24)), modes.ECB()).encryptor()  # noqa: S305
    else:
        enc = Cipher(SM4(os.urandom(16)), modes.ECB()).encryptor()  # noqa: S305
    block = os.urandom(alg.block_size)
    update, n = enc.update, 200_000

    def run() -> int:
        for _ in range(n):
            update(block)
        return n

    return best_rate(run)


def c_block_rate(alg: Algorithm) -> float:
    """Single-block ECB encryptions per second timed inside the C extension (context only)."""
    n = 2_000_000
    return max(n / _tacbatch.time_blocks(alg.value, n) for _ in range(ROUNDS))


def make_records(alg: Algorithm, master: bytes, per_card: int) -> list[TacCheck]:
    """``RECORDS`` valid purchase TAC records, ``per_card`` records per card (untimed setup)."""
    issuer_key = diversify(alg, master, ISSUER)
    checks: list[TacCheck] = []
    for n in range(RECORDS // per_card):
        asn = (0x1000000000000000 + n).to_bytes(8, "big")
        key = tac_key(alg, diversify(alg, issuer_key, asn))
        for k in range(per_card):
            data = md.purchase_tac_data(
                100 + k, b"\x11" * 6, n * per_card + k, b"\x20\x24\x03\x01", b"\x10\x15\x00"
            )
            checks.append(TacCheck((ISSUER, asn), data, mac(alg, key, data)))
    return checks


def tac_rate(verify: Callable[[KeyRef, list[TacCheck]], list[bool]], ref: KeyRef,
             checks: list[TacCheck]) -> float:  # fmt: skip
    """Measured verifications per second; every verdict must be True."""

    def run() -> int:
        verdicts = verify(ref, checks)
        assert all(verdicts)
        return len(verdicts)

    return best_rate(run)


def threaded_rate(hsm: SoftHsm, ref: KeyRef, checks: list[TacCheck], threads: int) -> float:
    """Aggregate verifications per second of ``threads`` threads verifying ``checks`` at once."""

    def run() -> int:
        failures: list[int] = []

        def work() -> None:
            if not all(hsm.verify_tacs(ref, checks)):
                failures.append(1)

        pool = [threading.Thread(target=work) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        assert not failures
        return threads * len(checks)

    return best_rate(run)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> int:
    cores = os.cpu_count() or 1
    print(f"machine: {cpu_model()}, {cores} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        hsm = SoftHsm(Path(tmp) / "bench.store", os.urandom(32), create=True)
        for alg in Algorithm:
            master = os.urandom(16)
            ref = KeyRef(1, "purse", "DTK", 1 if alg is Algorithm.TDES else 2)
            hsm.import_components(ref, alg, 2, split_key(alg, master, 2))
            raw = raw_block_rate(alg)
            ops = BLOCK_OPS[alg]
            limit = raw / ops
            print(f"\n{alg.value}: raw single-block ECB, reused encryptor: {raw:,.0f} blocks/s")
            print(f"  block ops per TAC verification: {ops} -> physical limit {limit:,.0f}/s")
            c_raw = c_block_rate(alg)
            c_limit = c_raw / ops
            print(
                f"  (context) same block rate timed in C: {c_raw:,.0f} blocks/s "
                f"-> limit {c_limit:,.0f}/s"
            )
            for per_card in (1, 4):
                checks = make_records(alg, master, per_card)
                rate = tac_rate(hsm.verify_tacs, ref, checks)
                print(
                    f"  verify_tacs, {per_card} record(s)/card, {RECORDS} records: "
                    f"{rate:,.0f}/s per core = {rate / limit:.0%} of the physical limit "
                    f"(context: {rate / c_limit:.0%} of the C-timed limit)"
                )
                py_rate = tac_rate(hsm._verify_tacs_python, ref, checks)
                print(
                    f"    (context) pure-Python path: {py_rate:,.0f}/s = {py_rate / limit:.0%}; "
                    f"{cores} threads at once: {threaded_rate(hsm, ref, checks, cores):,.0f}/s"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
