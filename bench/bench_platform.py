"""Platform benchmarks: postings per second, person search with 1,000,000 people, CSV import.

Run: ``.venv/bin/python bench/bench_platform.py [--people N] [--postings N] [--import-rows N]``
(``make bench`` runs it with the defaults). Each run works in a fresh PostgreSQL database made by
``scripts/pg-test-db.sh`` (dropped afterwards), prints its figures and the machine, and never
asserts anything: the numbers go to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import csv
import io
import multiprocessing as mp
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from onecard.platform.actors import Actor
from onecard.platform.db.engine import make_engine, make_session_factory
from onecard.platform.db.migrate import upgrade
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.ledger import operations as ops
from onecard.platform.people.importer import import_people, read_rows
from onecard.platform.people.services import search_people
from onecard.platform.tenants.services import create_tenant

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 1, tzinfo=UTC)
ACTOR = Actor.system("bench")
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡"
    "余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯"
    "龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
GIVEN = "伟芳娜敏静丽强磊洋艳勇军杰娟涛明超秀霞平刚桂英华玉兰萍红鹏飞建国志宏文斌辉"


def machine() -> str:
    """One line describing this machine."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pg = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {pg}"


def fresh_database() -> str:
    """A new PostgreSQL database URL (scripts/pg-test-db.sh)."""
    out = subprocess.run(
        ["bash", str(ROOT / "scripts/pg-test-db.sh")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def drop_database(url: str) -> None:
    """Drop a database made by :func:`fresh_database`."""
    subprocess.run(
        ["bash", str(ROOT / "scripts/pg-test-db.sh"), "drop", url], check=False, capture_output=True
    )


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


# ---- postings -----------------------------------------------------------------------------------


def setup_purses(url: str, holders: int) -> tuple[int, list[int]]:
    """A tenant with ``holders`` people, each topped up generously; returns ids."""
    sessions = make_session_factory(make_engine(url))
    with sessions() as s:
        tenant = create_tenant(s, f"bench{os.getpid()}", "Bench", actor=ACTOR, now=NOW)
        s.commit()
        with tenant_scope(tenant.id):
            s.execute(
                text(
                    "INSERT INTO people (tenant_id, person_no, name, identity_class, created_at,"
                    " updated_at) SELECT :t, 'B' || g, 'Bench ' || g, 'staff', now(), now()"
                    " FROM generate_series(1, :n) g"
                ),
                {"t": tenant.id, "n": holders},
            )
            ids = list(
                s.scalars(
                    text("SELECT id FROM people WHERE tenant_id = :t ORDER BY id"), {"t": tenant.id}
                )
            )
            for pid in ids:
                ops.top_up(s, pid, 10**9, channel="cash", actor=ACTOR, now=NOW)
            s.commit()
    return tenant.id, ids


def post_charges(url: str, tenant_id: int, person_ids: list[int], count: int, tag: str) -> int:
    """Post ``count`` charges, one entry per transaction; returns how many succeeded."""
    sessions = make_session_factory(make_engine(url, pool_size=2))
    with sessions() as s, tenant_scope(tenant_id):
        merchant = ops.tenant_account(s, "cash_desk")
        done = 0
        for n in range(count):
            pid = person_ids[n % len(person_ids)]
            ops.charge(
                s,
                pid,
                merchant,
                100,
                actor=ACTOR,
                now=NOW,
                code="bench.meal",
                idempotency_key=f"{tag}:{n}",
            )
            s.commit()
            done += 1
    return done


def _worker(args: tuple[str, int, list[int], int, str]) -> int:
    return post_charges(*args)


def bench_postings(url: str, count: int) -> dict[str, float]:
    """Entries per second: one process, then 8 concurrent client processes."""
    tenant_id, ids = setup_purses(url, 64)
    started = time.perf_counter()
    post_charges(url, tenant_id, ids, count, "single")
    single = count / (time.perf_counter() - started)
    per_client = count // 8
    jobs = [(url, tenant_id, ids[c * 8 : (c + 1) * 8], per_client, f"c{c}") for c in range(8)]
    started = time.perf_counter()
    with mp.get_context("spawn").Pool(8) as pool:
        total = sum(pool.map(_worker, jobs))
    concurrent = total / (time.perf_counter() - started)
    shared = [(url, tenant_id, ids[:1], per_client // 4, f"s{c}") for c in range(8)]
    started = time.perf_counter()
    with mp.get_context("spawn").Pool(8) as pool:
        total = sum(pool.map(_worker, shared))
    one_purse = total / (time.perf_counter() - started)
    return {"single": single, "concurrent8": concurrent, "one_purse8": one_purse}


# ---- person search ------------------------------------------------------------------------------


def load_people(url: str, count: int) -> tuple[int, list[str], list[str], list[str]]:
    """COPY ``count`` people and one card each into a new tenant; returns samples for queries."""
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with sessions() as s:
        tenant = create_tenant(s, f"search{os.getpid()}", "Search", actor=ACTOR, now=NOW)
        s.commit()
    rng = random.Random(7)
    names = [
        rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2)))
        for _ in range(count)
    ]
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        started = time.perf_counter()
        with cur.copy(
            "COPY people (tenant_id, person_no, name, identity_class, created_at, "
            "updated_at) FROM STDIN"
        ) as copy:
            for n, name in enumerate(names):
                copy.write_row((tenant.id, f"{10000000 + n}", name, "student", NOW, NOW))
        cur.execute("SELECT min(id) FROM people WHERE tenant_id = %s", (tenant.id,))
        first = cur.fetchone()[0]
        with cur.copy(
            "COPY cards (tenant_id, card_no, person_id, kind, status, deposit_fen, "
            "issued_at, status_changed_at) FROM STDIN"
        ) as copy:
            for n in range(count):
                copy.write_row(
                    (tenant.id, f"{70000000 + n}", first + n, "cpu", "active", 0, NOW, NOW)
                )
        raw.commit()
        cur.execute("ANALYZE people")
        cur.execute("ANALYZE cards")
        raw.commit()
        took = time.perf_counter() - started
        print(f"  loaded {count:,} people and cards by COPY in {took:.1f} s")
    finally:
        raw.close()
    samples = rng.sample(range(count), 400)
    return (
        tenant.id,
        [f"{10000000 + n}" for n in samples],
        [names[n] for n in samples],
        [f"{70000000 + n}" for n in samples],
    )


def bench_search(url: str, count: int) -> dict[str, dict[str, float]]:
    """p50/p95 of ``search_people`` (page of 50 plus total) by kind of query."""
    tenant_id, numbers, names, cards = load_people(url, count)
    sessions = make_session_factory(make_engine(url))
    kinds: dict[str, list[str]] = {
        "person number": numbers,
        "person-number prefix (7 of 8 digits)": [n[:7] for n in numbers],
        "full name": names,
        "card number": cards,
        "one-character surname (about 1% of everyone)": [n[0] for n in names],
        "no query (first page of everyone)": [""] * 100,
    }
    results = {}
    with sessions() as s, tenant_scope(tenant_id):
        for label, queries in kinds.items():
            results[label] = _time_queries(
                lambda q, s=s: search_people(s, actor=ACTOR, q=q), queries
            )
    return results


def _time_queries(run: Callable[[str], object], queries: list[str]) -> dict[str, float]:
    for q in queries[:20]:
        run(q)  # warm caches the way a running server's are
    times = []
    for q in queries:
        started = time.perf_counter()
        run(q)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50": statistics.median(times), "p95": percentile(times, 95), "n": len(times)}


# ---- import -------------------------------------------------------------------------------------


def bench_import(url: str, rows: int) -> float:
    """Seconds to import ``rows`` people from a CSV file (validation + insert + commit)."""
    sessions = make_session_factory(make_engine(url))
    with sessions() as s:
        tenant = create_tenant(s, f"imp{os.getpid()}", "Import", actor=ACTOR, now=NOW)
        s.commit()
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["person_no", "name", "identity_class", "phone", "email"])
    for n in range(rows):
        writer.writerow([f"I{n:07d}", f"导入{n}", "student", "13800000000", f"p{n}@example.edu"])
    data = buf.getvalue().encode()
    started = time.perf_counter()
    with sessions() as s, tenant_scope(tenant.id):
        report = import_people(s, read_rows(data, "people.csv"), actor=ACTOR, now=NOW)
        s.commit()
    elapsed = time.perf_counter() - started
    assert report.imported == rows, report.as_dict(5)
    return elapsed


def main() -> None:
    """Parse options, run the benchmarks in fresh databases, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postings", type=int, default=4000)
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--import-rows", type=int, default=100_000)
    parser.add_argument(
        "--only",
        choices=("postings", "import", "search"),
        action="append",
        help="run only these (repeatable); default: all",
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for name, run in (
        ("postings", lambda u: _report_postings(bench_postings(u, args.postings))),
        ("import", lambda u: _report_import(bench_import(u, args.import_rows), args.import_rows)),
        ("search", lambda u: _report_search(bench_search(u, args.people), args.people)),
    ):
        url = fresh_database()
        try:
            upgrade(make_engine(url))
            print(f"[{name}]")
            run(url)
        finally:
            drop_database(url)
    sys.stdout.flush()


def _report_postings(r: dict[str, float]) -> None:
    print(f"  one process, one entry per transaction: {r['single']:,.0f} entries/s")
    print(f"  8 client processes, different purses:   {r['concurrent8']:,.0f} entries/s")
    print(f"  8 client processes, one shared purse:   {r['one_purse8']:,.0f} entries/s")


def _report_import(seconds: float, rows: int) -> None:
    print(f"  {rows:,} people from CSV: {seconds:.1f} s ({rows / seconds:,.0f} rows/s)")


def _report_search(r: dict[str, dict[str, float]], count: int) -> None:
    print(f"  person search over {count:,} people (page of 50 + total count):")
    for label, t in r.items():
        print(f"    {label:<46} p50 {t['p50']:6.1f} ms   p95 {t['p95']:6.1f} ms   (n={t['n']})")


if __name__ == "__main__":
    tempfile.tempdir = None
    main()
