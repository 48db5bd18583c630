"""Device-side benchmarks: 1,000 simulated terminals against the real bridge and Mosquitto.

Runs on the embedded default (SQLite file + private Mosquitto with the platform's generated
config) and on PostgreSQL (a fresh database from scripts/pg-test-db.sh, dropped afterwards).
The bridge runs in its own process (as ``onecard bridge`` would); the simulated fleet runs in
this process on one network thread; Mosquitto is a third process.

  (a) online tap round trip at a sustained rate: present() on a terminal -> decision callback
  (b) record ingest with exactly-once: every terminal holds N offline records, then connects
      (the reconnect storm: hello, time sync and state of every terminal come first)
  (b2) burst ingest: every connected terminal uploads a backlog at once (the pipeline's rate)
  (c) revocation time-to-effect: report_loss -> each online terminal's blacklist holds the card
  (d) raw broker publish/subscribe QoS 1 round trip on the same broker (the physical limit),
      the database's own round trip (``SELECT 1`` on the bridge's engine profile) and a fixed
      piece of Python work: what the machine gave this run (it varies by a factor of several
      within hours; see docs/devices.md, "Device benchmarks"); last, the taps of (a) once
      more from a new fleet, answered by an echo responder with no platform behind it: what
      the fleet, the broker and a Python MQTT client take of (a) at that rate; and what waking
      a thread or a process costs here (a tap does so about a dozen times)

Usage: .venv/bin/python bench/bench_devices.py [--devices 1000] [--rate 500]
                                               [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onecard.device_agents.sim.fleet import Fleet

ROOT = Path(__file__).resolve().parents[1]
PLATFORM_PW = "bench-platform-password"
SECRET = "bench-secret-key-0123456789abcdef"
CARDS = 500


# -- helpers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def machine() -> str:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


class CpuMeter:
    """CPU seconds used by each part of the set-up (from /proc): where the two cores went.

    ``roles`` maps a name to a callable giving the pids of that part at the time of reading
    (the database's backends come and go)."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, roles: dict[str, Callable[[], list[int]]]) -> None:
        self.roles = roles
        self._start: dict[str, float] = {}
        self._t = 0.0

    @classmethod
    def seconds(cls, pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / cls.TICK  # utime + stime, all threads

    def _read(self) -> dict[str, float]:
        return {r: sum(self.seconds(p) for p in pids()) for r, pids in self.roles.items()}

    def start(self) -> None:
        self._start, self._t = self._read(), time.monotonic()

    def shares(self) -> dict[str, float]:
        """Cores used by each part since :meth:`start` (1.0 = one core busy throughout)."""
        now, wall = self._read(), max(1e-9, time.monotonic() - self._t)
        return {r: round((now[r] - self._start.get(r, 0.0)) / wall, 2) for r in now}


def postgres_pids() -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if (d / "comm").read_text().strip() == "postgres":
                    out.append(int(d.name))
    return out


def uid_of(i: int) -> str:
    return f"{0x10000000 + i:08X}"


def wait(cond: Callable[[], bool], bound: float, what: str, step: float = 0.1) -> float:
    started = time.monotonic()
    while not cond():
        if time.monotonic() - started > bound:
            raise TimeoutError(f"{what} not reached in {bound:.0f} s")
        time.sleep(step)
    return time.monotonic() - started


# -- the bridge process ----------------------------------------------------------------------


def bridge_main(url: str, port: int, ready: Any, stop: Any, workers: int | None, name: str) -> None:
    """Run one bridge (child process) until ``stop`` is set."""
    from onecard.platform.db.engine import make_engine, make_session_factory
    from onecard.platform.devices.bridge import Bridge, Connection
    from onecard.platform.devices.broker import PLATFORM_USER
    from onecard.platform.devices.runtime import tune_for_the_bridge
    from onecard.platform.secrets import SecretBox

    sf = make_session_factory(make_engine(url, hot_path=True))  # as `onecard bridge` has it
    conn = Connection("127.0.0.1", port, PLATFORM_USER, PLATFORM_PW, client_id=name)
    bridge = Bridge(sf, conn, box=SecretBox(SECRET), workers=workers)
    tune_for_the_bridge()  # as `onecard bridge` does
    bridge.start()
    if not bridge.subscribed.wait(60):
        raise SystemExit("bridge did not subscribe")
    ready.set()
    stop.wait()
    bridge.stop()


@contextlib.contextmanager
def bridge_processes(
    url: str, port: int, count: int = 1, workers: int | None = None
) -> Iterator[list[int]]:
    """``count`` bridges, each its own process (as ``onecard bridge`` runs), sharing the
    subscription; yields their pids."""
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs, readies = [], []
    for i in range(count):
        ready = ctx.Event()
        args = (url, port, ready, stop, workers, f"bench-bridge-{i}")
        proc = ctx.Process(target=bridge_main, args=args, daemon=True)
        proc.start()
        procs.append(proc)
        readies.append(ready)
    try:
        for ready in readies:
            if not ready.wait(90):
                raise RuntimeError("a bridge process did not come up")
        yield [int(p.pid or 0) for p in procs]
    finally:
        stop.set()
        for proc in procs:
            proc.join(20)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def echo_main(port: int, ready: Any, stop: Any) -> None:
    """Answer every ``up/tap`` at once with a fixed denial, on paho's network thread, with no
    platform behind it (child process): what the fleet, the broker and one MQTT client in
    Python cost a tap at the bench's rate, the floor under (a)."""
    import json

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from onecard.device_agents.protocol.codec import encode
    from onecard.device_agents.protocol.codes import ReasonCode
    from onecard.device_agents.protocol.messages import TapDecision
    from onecard.device_agents.runtime.paho_properties import use_lean_properties
    from onecard.platform.devices.broker import PLATFORM_USER

    use_lean_properties()  # as the bridge's client has it
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-echo", protocol=mqtt.MQTTv5)
    c.username_pw_set(PLATFORM_USER, PLATFORM_PW)

    def on_connect(cl: Any, *_a: Any) -> None:
        cl.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cl.subscribe("$share/bench-echo/oc/v1/+/up/tap", qos=1)

    def on_message(cl: Any, _u: Any, m: Any) -> None:
        device = m.topic.split("/")[2]
        req_id = json.loads(m.payload)["req_id"]
        reply = TapDecision(req_id=req_id, allow=False, reason=ReasonCode.NO_HANDLER)
        cl.publish(f"oc/v1/{device}/down/tap", encode(reply), qos=1)

    c.on_connect = on_connect
    c.on_message = on_message
    c.on_subscribe = lambda *_a: ready.set()
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    stop.wait()
    c.disconnect()
    c.loop_stop()


@contextlib.contextmanager
def child(target: Callable[..., None], *args: Any) -> Iterator[int]:
    """Run ``target(*args, ready, stop)`` in a spawned process while the block runs; yields
    its pid (also used by bench_canteen.py)."""
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=target, args=(*args, ready, stop), daemon=True)
    proc.start()
    try:
        if not ready.wait(90):
            raise RuntimeError(f"{target.__name__} did not come up")
        yield int(proc.pid or 0)
    finally:
        stop.set()
        proc.join(20)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)


def forget_session(port: int, client_id: str) -> None:
    """End the broker's persistent session of ``client_id`` (a stopped bridge's): connect
    with a clean start and no session expiry, then leave. Otherwise the broker keeps queueing
    the taps of its shared subscription for it while the echo answers them."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from onecard.platform.devices.broker import PLATFORM_USER

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.username_pw_set(PLATFORM_USER, PLATFORM_PW)
    c.connect("127.0.0.1", port, 30, clean_start=True)  # session expiry 0: gone on leaving
    c.loop_start()
    try:
        wait(c.is_connected, 10, "clean connect", 0.02)
    finally:
        c.disconnect()
        c.loop_stop()


# -- platform setup -------------------------------------------------------------------------


def setup_platform(url: str, devices: int) -> tuple[Any, int, dict[str, Any], list[int]]:
    """Migrate, create a tenant with ``devices`` terminals and CARDS cards; return
    (session factory, tenant id, credentials, card ids)."""
    from onecard.device_agents.protocol.codes import DeviceKind
    from onecard.platform.actors import Actor
    from onecard.platform.cards.lifecycle import NewCard, issue_card
    from onecard.platform.db.engine import make_engine, make_session_factory
    from onecard.platform.db.migrate import upgrade
    from onecard.platform.db.tenancy import tenant_scope
    from onecard.platform.devices.services import NewDevice, add_device
    from onecard.platform.people.schemas import PersonCreate
    from onecard.platform.people.services import create_person
    from onecard.platform.tenants.services import create_tenant

    engine = make_engine(url)
    upgrade(engine)
    sf = make_session_factory(engine)
    actor, now = Actor.system("bench"), datetime.now(UTC)
    tag = uuid.uuid4().hex[:6]
    with sf() as s:
        tenant = create_tenant(s, f"bench{tag}", "Bench tenant", actor=actor, now=now)
        s.commit()
        tid = tenant.id
    creds: dict[str, Any] = {}
    cards: list[int] = []
    kinds = (DeviceKind.POS, DeviceKind.DOOR)
    with sf() as s, tenant_scope(tid):
        for i in range(devices):
            kind = kinds[i % 2]
            dev_id = f"b{tag}-{kind.value}-{i:04d}"
            _d, pw = add_device(s, NewDevice(dev_id, kind.value), actor=actor, now=now)
            creds[dev_id] = (dev_id, pw, kind)
        for i in range(CARDS):
            person = create_person(
                s,
                PersonCreate(person_no=f"P{tag}{i:05d}", name=f"Bench {i}", identity_class="staff"),
                actor=actor,
                now=now,
            )
            card = issue_card(
                s, person, NewCard(card_no=f"B{tag}{i:06d}", uid=uid_of(i)), actor=actor, now=now
            )
            cards.append(card.id)
        s.commit()
    if engine.dialect.name == "postgresql":  # statistics, as a production database has them
        from sqlalchemy import text

        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return sf, tid, creds, cards


def record_counts(sf: Any, tid: int) -> tuple[int, int]:
    from sqlalchemy import func, select

    from onecard.platform.db.tenancy import tenant_scope
    from onecard.platform.devices.models import DeviceRecord

    with sf() as s, tenant_scope(tid):
        total = s.scalar(select(func.count(DeviceRecord.id))) or 0
        distinct = (
            s.scalar(
                select(func.count()).select_from(
                    select(DeviceRecord.device_pk, DeviceRecord.epoch, DeviceRecord.seq)
                    .distinct()
                    .subquery()
                )
            )
            or 0
        )
    return int(total), int(distinct)


def received_span(sf: Any, tid: int) -> float:
    from sqlalchemy import func, select

    from onecard.platform.db.tenancy import tenant_scope
    from onecard.platform.devices.models import DeviceRecord

    with sf() as s, tenant_scope(tid):
        lo, hi = s.execute(
            select(func.min(DeviceRecord.received_at), func.max(DeviceRecord.received_at))
        ).one()
    return float((hi - lo).total_seconds()) if lo and hi else float("nan")


# -- (d) raw broker round trip ----------------------------------------------------------------


def broker_rtt(port: int, n: int = 2000) -> dict[str, float]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from onecard.platform.devices.broker import PLATFORM_USER

    got = threading.Event()
    clients = []

    def make(name: str, sub: str) -> Any:
        ok = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        c.username_pw_set(PLATFORM_USER, PLATFORM_PW)

        def on_connect(cl: Any, *_a: Any) -> None:
            cl.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            cl.subscribe(sub, qos=1)

        c.on_connect = on_connect
        c.on_subscribe = lambda *_a: ok.set()
        c.connect("127.0.0.1", port, 30)
        c.loop_start()
        assert ok.wait(10)
        clients.append(c)
        return c

    responder = make(f"rtt-r-{uuid.uuid4().hex[:6]}", "oc/v1/bench-rtt/down/ping")
    requester = make(f"rtt-q-{uuid.uuid4().hex[:6]}", "oc/v1/bench-rtt/down/pong")
    responder.on_message = lambda c, _u, m: c.publish("oc/v1/bench-rtt/down/pong", m.payload, 1)
    requester.on_message = lambda *_a: got.set()
    samples = []
    payload = b"x" * 200
    for i in range(n + 50):
        got.clear()
        t = time.perf_counter()
        requester.publish("oc/v1/bench-rtt/down/ping", payload, 1)
        if not got.wait(5):
            continue
        if i >= 50:
            samples.append((time.perf_counter() - t) * 1000)
    for c in clients:
        c.disconnect()
        c.loop_stop()
    return {"p50": pct(samples, 50), "p99": pct(samples, 99), "n": len(samples)}


def database_rtt(url: str, n: int = 2000) -> dict[str, float]:
    """``SELECT 1`` round trips on one connection of the bridge's engine profile (a plain tap
    on PostgreSQL costs four of them: begin, read, insert, commit)."""
    from sqlalchemy import text

    from onecard.platform.db.engine import make_engine

    engine = make_engine(url, hot_path=True)
    samples = []
    try:
        with engine.connect() as conn:
            stmt = text("SELECT 1")
            for i in range(n + 50):
                t = time.perf_counter()
                conn.execute(stmt).scalar()
                if i >= 50:
                    samples.append((time.perf_counter() - t) * 1000)
    finally:
        engine.dispose()
    return {"p50": pct(samples, 50), "p99": pct(samples, 99), "n": len(samples)}


def handoff_rtt(n: int = 2000) -> dict[str, float]:
    """Round trips of one byte between two threads (a ``queue.Queue`` each way) and between
    two processes (a socket pair), in milliseconds: what waking a waiting thread or process
    costs on this machine. A tap wakes one or the other about a dozen times on its way
    (fleet, broker, the bridge's threads, the database), so on a machine where this is slow
    the tap is slow whatever the code does (this machine kind, a nested virtual machine: a
    process round trip took 0.07 ms and, half an hour earlier, 0.32 ms)."""
    import queue

    there: queue.Queue[int | None] = queue.Queue()
    back: queue.Queue[int] = queue.Queue()

    def echo() -> None:
        while (item := there.get()) is not None:
            back.put(item)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    threads = []
    for i in range(n + 50):
        t = time.perf_counter()
        there.put(i)
        back.get()
        if i >= 50:
            threads.append((time.perf_counter() - t) * 1000)
    there.put(None)
    thread.join()
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the other process: echo until the pair closes
        ours.close()
        while data := theirs.recv(64):
            theirs.send(data)
        os._exit(0)
    theirs.close()
    procs = []
    for i in range(n + 50):
        t = time.perf_counter()
        ours.send(b"x")
        ours.recv(64)
        if i >= 50:
            procs.append((time.perf_counter() - t) * 1000)
    ours.close()
    os.waitpid(pid, 0)
    return {"threads_p50": pct(threads, 50), "processes_p50": pct(procs, 50)}


def cpu_probe(n: int = 30) -> dict[str, float]:
    """Milliseconds for a fixed piece of pure-Python work (one million loop steps), median
    and slowest of ``n``: this machine kind's speed differs between hosts and hours (ten
    million such steps took 0.91 s in one session and 0.74 s in the next)."""
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        samples.append((time.perf_counter() - t) * 1000)
    return {"p50": pct(samples, 50), "max": max(samples)}


# -- (b2) burst ingest while online ------------------------------------------------------------


def acked(f: Any) -> int:
    """Records the platform has acknowledged to the terminals so far (their in-memory counters:
    polling them costs the database nothing; the stored rows are counted once at the end)."""
    return int(f.loop.call(lambda: sum(t.counters.records_acked for t in f.terminals)))


def resend_in_turns(f: Any, terminals: list[Any], handed: list[float], turn: int = 10) -> None:
    """Start ``resend_all`` on ``terminals``, ``turn`` of them per pass of the fleet's loop
    (runs in the loop's thread), and append the time to ``handed`` after the last. Real
    terminals prepare their uploads each on its own; done all at once in one callback, the
    loop wrote nothing to the network for the second or so that preparing 1,000 uploads
    takes, and the platform sat idle until the first byte came."""
    now, rest = terminals[:turn], terminals[turn:]
    for term in now:
        term.agent.resend_all()
    if rest:
        f.loop.call_later(0.0, lambda: resend_in_turns(f, rest, handed, turn))
    else:
        handed.append(time.monotonic())


def burst_ingest(
    f: Any, sf: Any, tid: int, per_device: int, name: str, cpu: CpuMeter
) -> dict[str, Any]:
    """Give every terminal ``per_device`` stored records, then let all upload at once.

    The records go into each agent's store directly (as if written while its uplink was
    congested); ``resend_all`` (the ``resend_records`` command's action) then uploads every
    unacknowledged record in batches of 100 with 4 in flight per terminal."""
    from onecard.device_agents.protocol.codes import CredentialKind, ReasonCode
    from onecard.device_agents.protocol.messages import Credential

    base = acked(f)

    def fill() -> int:
        now_ms = int(time.time() * 1000)
        for k, term in enumerate(f.terminals):
            for j in range(per_device):
                term.agent.store.append_record(
                    {
                        "event": "door_open",
                        "device_time": now_ms + j,
                        "credential": Credential(
                            kind=CredentialKind.UID, value=uid_of((k + j) % CARDS)
                        ),
                        "allow": True,
                        "reason": ReasonCode.OK,
                    }
                )
        return per_device * len(f.terminals)

    t = time.monotonic()
    added = int(f.loop.call(fill, timeout=600))
    print(
        f"[{name}] burst: {added} records stored on the terminals in {time.monotonic() - t:.1f} s"
    )
    start = time.monotonic()
    cpu.start()
    handed: list[float] = []
    f.loop.call(lambda: resend_in_turns(f, list(f.terminals), handed))
    wait(lambda: acked(f) >= base + added, 900, "burst ingest", 0.05)
    took = time.monotonic() - start
    cores = cpu.shares()
    total, distinct = record_counts(sf, tid)
    return {
        "records": added,
        "seconds": took,
        "rate": added / took,
        "stored_twice": total - distinct,
        "fleet_publish_s": handed[0] - start if handed else float("nan"),
        "cpu": cores,
    }


# -- the runs --------------------------------------------------------------------------------


def run_backend(name: str, url: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from onecard.device_agents.protocol.blacklist import credential_key
    from onecard.device_agents.protocol.codes import CredentialKind
    from onecard.device_agents.runtime.agent import Presented
    from onecard.device_agents.sim.fleet import (
        AMOUNT_KINDS,
    )
    from onecard.platform.actors import Actor
    from onecard.platform.cards.lifecycle import report_loss
    from onecard.platform.cards.models import Card
    from onecard.platform.db.tenancy import tenant_scope
    from onecard.platform.devices.broker import EmbeddedBroker, Listener
    from onecard.platform.devices.services import all_credentials

    out: dict[str, Any] = {"backend": name}
    t = time.monotonic()
    sf, tid, creds, cards = setup_platform(url, args.devices)
    print(f"[{name}] setup {time.monotonic() - t:.1f} s", flush=True)
    with sf() as s:
        devices = all_credentials(s)
    port = free_port()
    broker = EmbeddedBroker(
        folder / "mqtt", Listener(port), platform_password=PLATFORM_PW, devices=devices
    )
    broker.start()
    fleet = None
    try:
        out["broker"] = broker_rtt(port)
        print(f"[{name}] broker rtt {out['broker']}", flush=True)
        out["database"] = database_rtt(url)
        out["cpu_probe"] = cpu_probe()
        out["handoff"] = handoff_rtt()
        print(
            f"[{name}] database rtt {out['database']} cpu probe {out['cpu_probe']} "
            f"hand-off {out['handoff']}",
            flush=True,
        )
        with bridge_processes(url, port, args.bridges, args.workers) as bridge_pids:
            roles = {
                "fleet": lambda: [os.getpid()],
                "bridge": lambda: bridge_pids,
                "broker": lambda: [broker.pid] if broker.pid else [],
            }
            if name == "postgres":
                roles["database"] = postgres_pids
            cpu = CpuMeter(roles)
            fleet = f = make_fleet(args, port, folder / "fleet", creds)
            # (b) ingest: every terminal stores records offline, then all connect at once.
            t = time.monotonic()
            for k, term in enumerate(f.terminals):
                for j in range(args.records):
                    amount = 100 + j if term.kind in AMOUNT_KINDS else None
                    term.agent.present(Presented.uid(uid_of((k + j) % CARDS).lower(), amount))
            created = sum(term.counters.records_created for term in f.terminals)
            print(f"[{name}] {created} records stored offline in {time.monotonic() - t:.1f} s")
            cpu.start()
            f.start()
            connect_s = wait(lambda: f.online() == args.devices, 300, "all online", 0.05)
            ingest_s = wait(lambda: acked(f) >= created, 900, "ingest", 0.05)
            ingest_cpu = cpu.shares()
            drained = f.drain(timeout=120)
            total, distinct = record_counts(sf, tid)
            span = received_span(sf, tid)
            totals = f.totals()
            out["ingest"] = {
                "records": created,
                "stored": total,
                "distinct": distinct,
                "dup_sent": totals["duplicates_sent"],
                "drained": drained,
                "connect_s": connect_s,
                "wall_s": ingest_s + connect_s,
                "rate_wall": created / (ingest_s + connect_s),
                "rate_span": created / span if span else float("nan"),
                "cpu": ingest_cpu,
            }
            print(f"[{name}] ingest {out['ingest']}", flush=True)
            time.sleep(3)  # let hellos, time syncs, heartbeats settle
            cpu.start()
            time.sleep(3)
            out["idle_cpu"] = cpu.shares()  # 1,000 connected terminals, nothing tapped
            print(f"[{name}] idle cpu {out['idle_cpu']}", flush=True)

            # (a) online tap round trip at a sustained rate.
            out["tap"] = offered_taps(f, args, cpu)
            print(f"[{name}] tap {out['tap']}", flush=True)
            f.drain(timeout=120)  # timed-out taps became records; let them upload
            time.sleep(2)

            # (c) revocation: report_loss -> every online terminal's blacklist holds the card.
            ttes: list[float] = []
            misses = 0
            for r in range(args.revocations):
                card_id = cards[-(r + 1)]
                with sf() as s, tenant_scope(tid):
                    card = s.get(Card, card_id)
                    assert card is not None
                    key = credential_key(CredentialKind.UID, card.uid or "")
                    online = [tm for tm in f.terminals if tm.agent.online]
                    seen: dict[str, float] = {}

                    def check(
                        key: int = key, online: list[Any] = online, seen: dict[str, float] = seen
                    ) -> None:
                        now = time.monotonic()
                        for tm in online:
                            if tm.device not in seen:
                                bl = tm.agent.lists.get("blacklist")
                                if bl is not None and key in bl:
                                    seen[tm.device] = now

                    start = time.monotonic()
                    report_loss(s, card, actor=Actor.system("bench"), now=datetime.now(UTC))
                    s.commit()
                committed = time.monotonic()
                f.loop.every_tick(check)
                with contextlib.suppress(TimeoutError):
                    wait(lambda o=online, d=seen: len(d) >= len(o), 60, "revocation", 0.05)
                f.loop.remove_tick(check)
                times = [v - start for v in seen.values()]
                misses += len(online) - len(seen)
                ttes += times
                print(
                    f"[{name}] revocation {r}: commit {committed - start:.3f} s, "
                    f"{len(seen)}/{len(online)} devices, p50 {pct(times, 50):.2f} s "
                    f"p95 {pct(times, 95):.2f} s max {max(times, default=float('nan')):.2f} s",
                    flush=True,
                )
                time.sleep(2)
            out["revocation"] = {
                "p50": pct(ttes, 50),
                "p95": pct(ttes, 95),
                "max": max(ttes, default=float("nan")),
                "samples": len(ttes),
                "missed": misses,
            }
            # (b2) burst, last (its 100,000 rows leave WAL and vacuum work behind): every
            # online terminal holds a backlog and uploads it at once (no reconnect storm in
            # front), the ingest pipeline's own rate.
            out["burst"] = burst_ingest(f, sf, tid, args.burst, name, cpu)
            print(f"[{name}] burst {out['burst']}", flush=True)
            fleet.stop()
            fleet = None
        # (d) the floor under (a): the same taps at the same rate from a new fleet (the same
        # terminals, empty stores), answered by a responder with nothing behind it.
        for i in range(args.bridges):
            forget_session(port, f"bench-bridge-{i}")
        with child(echo_main, port) as echo_pid:
            fleet = f = make_fleet(args, port, folder / "fleet-echo", creds)
            f.start()
            wait(lambda: f.online() == args.devices, 300, "all online (echo)", 0.05)
            time.sleep(3)
            cpu = CpuMeter(
                {
                    "fleet": lambda: [os.getpid()],
                    "echo": lambda: [echo_pid],
                    "broker": lambda: [broker.pid] if broker.pid else [],
                }
            )
            out["echo"] = offered_taps(f, args, cpu)
            print(f"[{name}] echo {out['echo']}", flush=True)
            fleet.stop()
            fleet = None
    finally:
        if fleet is not None:
            fleet.stop()
        broker.stop()
    return out


def make_fleet(args: argparse.Namespace, port: int, folder: Path, creds: dict[str, Any]) -> Fleet:
    """The bench's fleet: ``args.devices`` POS and door terminals that answer taps only when
    told (:func:`offered_taps`), with duplicated uploads, not yet started."""
    from onecard.device_agents.protocol.codes import DeviceKind
    from onecard.device_agents.runtime.mqtt import BrokerAddress
    from onecard.device_agents.sim.fleet import Fleet, FleetSettings, tune_for_the_fleet

    fleet = Fleet(
        FleetSettings(
            devices=args.devices,
            kinds=(DeviceKind.POS, DeviceKind.DOOR),
            broker=BrokerAddress("127.0.0.1", port),
            folder=folder,
            faults=frozenset({"duplicate"}),
            credentials=creds,
            tap_rate=1e-6,
            cards=CARDS,
            agent={"heartbeat_s": 60.0, "tap_timeout_s": 2.0},
        )
    )
    fleet.taps = False
    tune_for_the_fleet()  # as `onecard sim` does
    return fleet


def offered_taps(f: Fleet, args: argparse.Namespace, cpu: CpuMeter) -> dict[str, Any]:
    """Present ``args.rate`` taps a second on the fleet's terminals (in turn, every 7,919th)
    for ``args.warmup`` + ``args.tap_seconds``; the round trips (present -> decision) of the
    taps presented after the warm-up, and where the cores went meanwhile."""
    from onecard.device_agents.runtime.agent import Presented
    from onecard.device_agents.sim.fleet import AMOUNT_KINDS

    lat: list[float] = []
    timeouts = [0]
    state: dict[str, Any] = {"issued": 0, "begin": 0.0, "stop": False}
    n = len(f.terminals)
    interval = 1.0 / args.rate

    def make_done(sent: float, warm: bool) -> Callable[[Any], None]:
        def done(decision: Any) -> None:
            if not warm:
                return
            if decision.online:
                lat.append((time.perf_counter() - sent) * 1000)
            else:
                timeouts[0] += 1

        return done

    def driver() -> None:
        if state["stop"]:
            return
        now = time.monotonic()
        due = int((now - state["begin"]) * args.rate) - state["issued"]
        for _ in range(max(0, due)):
            k = state["issued"]
            state["issued"] = k + 1
            term = f.terminals[(k * 7919) % n]
            amount = 100 if term.kind in AMOUNT_KINDS else None
            warm = now - state["begin"] > args.warmup
            term.agent.present(
                Presented.uid(uid_of(k % CARDS).lower(), amount),
                make_done(time.perf_counter(), warm),
            )
        f.loop.call_later(interval, driver)

    def begin() -> None:
        state["begin"] = time.monotonic()
        driver()

    f.loop.call(begin)
    time.sleep(args.warmup)
    cpu.start()
    time.sleep(args.tap_seconds)
    tap_cpu = cpu.shares()
    f.loop.call(lambda: state.__setitem__("stop", True))
    issued = state["issued"]
    elapsed = time.monotonic() - state["begin"]
    time.sleep(3)
    measured = len(lat) + timeouts[0]
    return {
        "offered": issued / elapsed,
        "achieved": len(lat) / args.tap_seconds,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "max": max(lat) if lat else float("nan"),
        "timeouts": timeouts[0],
        "measured": measured,
        "cpu": tap_cpu,
    }


def each_backend(
    backends: str, prefix: str, run: Callable[[str, str, Path], dict[str, Any]]
) -> list[dict[str, Any]]:
    """``run(name, url, folder)`` on each of ``backends`` (``sqlite,postgres``): SQLite in a
    temporary folder, PostgreSQL on a fresh database from scripts/pg-test-db.sh, dropped after."""
    results = []
    for backend in backends.split(","):
        with tempfile.TemporaryDirectory(prefix=f"{prefix}-{backend}-") as tmp:
            folder = Path(tmp)
            if backend == "sqlite":
                results.append(run("sqlite", f"sqlite:///{folder / 'onecard.db'}", folder))
            elif backend == "postgres":
                script = str(ROOT / "scripts" / "pg-test-db.sh")
                url = subprocess.run(
                    ["bash", script], capture_output=True, text=True, check=True
                ).stdout.strip()
                try:
                    results.append(run("postgres", url, folder))
                finally:
                    subprocess.run(["bash", script, "drop", url], check=False)
            else:
                raise SystemExit(f"unknown backend {backend}")
    return results


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def cell(r: dict[str, Any], path: str, fmt: str) -> str:
        node: Any = r
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return "n/a"
            node = node[part]
        return format(node, fmt)

    rows = [
        ("(a) tap offered rate /s", "tap.offered", ".0f", f"{args.rate}"),
        ("(a) tap answered online /s", "tap.achieved", ".0f", f"{args.rate}"),
        ("(a) tap round trip p50 ms", "tap.p50", ".1f", "<= 5"),
        ("(a) tap round trip p99 ms", "tap.p99", ".1f", "<= 15"),
        ("(a) taps timed out (offline)", "tap.timeouts", "d", "0"),
        # The storm times session set-up (connect, state, hello, time sync) as much as ingest;
        # the ingest-rate target is the burst's (b2), where every terminal is online already.
        ("(b) reconnect storm: records stored", "ingest.stored", "d", ""),
        ("(b) reconnect storm: connect->all stored s", "ingest.wall_s", ".2f", ""),
        ("(b) reconnect storm: records/s, connect->all", "ingest.rate_wall", ".0f", ""),
        ("(b) reconnect storm: records/s, first->last", "ingest.rate_span", ".0f", ""),
        ("(b) duplicate records sent / stored twice", "ingest.dup_sent", "d", ""),
        ("(b2) burst records (all online, 100/batch)", "burst.records", "d", ""),
        ("(b2) burst: ingest rate, exactly once /s", "burst.rate", ".0f", ">= 20000"),
        ("(b2) burst records stored twice", "burst.stored_twice", "d", "0"),
        ("(c) revocation p50 s", "revocation.p50", ".2f", ""),
        ("(c) revocation p95 s", "revocation.p95", ".2f", "<= 2"),
        ("(c) revocation max s", "revocation.max", ".2f", ""),
        ("(d) broker QoS1 RTT p50 ms", "broker.p50", ".2f", ""),
        ("(d) broker QoS1 RTT p99 ms", "broker.p99", ".2f", ""),
        ("(d) database SELECT 1 RTT p50 ms", "database.p50", ".3f", ""),
        ("(d) database SELECT 1 RTT p99 ms", "database.p99", ".3f", ""),
        ("(d) CPU probe: 1M Python loop steps, median ms", "cpu_probe.p50", ".1f", ""),
        ("(d) wake a thread and back (queue) p50 ms", "handoff.threads_p50", ".3f", ""),
        ("(d) wake a process and back (socket) p50 ms", "handoff.processes_p50", ".3f", ""),
        ("(d) same taps, echo responder: p50 ms", "echo.p50", ".1f", ""),
        ("(d) same taps, echo responder: p99 ms", "echo.p99", ".1f", ""),
    ]
    head = ["metric", *[r["backend"] for r in results], "target"]
    lines = [head]
    for label, path, fmt, target in rows:
        vals = [cell(r, path, fmt) for r in results]
        if path == "ingest.dup_sent":
            vals = [f"{cell(r, path, fmt)} / {_twice(r)}" for r in results]
        lines.append([label, *vals, target])
    widths = [max(len(x[i]) for x in lines) for i in range(len(head))]
    text = []
    for n, line in enumerate(lines):
        text.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if n == 0:
            text.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(text)


def _twice(r: dict[str, Any]) -> str:
    ing = r.get("ingest")
    return "n/a" if not ing else str(ing["stored"] - ing["distinct"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--rate", type=float, default=500.0, help="offered online taps per second")
    p.add_argument("--tap-seconds", type=float, default=15.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--records", type=int, default=30, help="offline records per device")
    p.add_argument("--burst", type=int, default=100, help="burst records per online device")
    p.add_argument("--revocations", type=int, default=3)
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument(
        "--bridges", type=int, default=1, help="bridge processes sharing the subscription"
    )
    p.add_argument(
        "--workers", type=int, default=None, help="bridge workers (default: the bridge's own)"
    )
    args = p.parse_args()
    print(f"machine: {machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    results = each_backend(
        args.backends, "bench-dev", lambda name, url, folder: run_backend(name, url, args, folder)
    )
    print()
    print(table(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
