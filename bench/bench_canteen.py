"""Canteen sales through the whole path: POS -> Mosquitto -> bridge -> ledger -> live feed.

What runs (each piece is the product's own, in its own process where production has one):

- a private Mosquitto (``EmbeddedBroker``, the platform's generated config);
- the bridge in a child process with the installed modules loaded (``Registry.load()``), so a
  POS tap is decided by canteen's ``onecard_authorize_tap`` and each allowed sale posts one
  double-entry ledger entry and writes one ``canteen_sales`` row (``onecard_tap_recorded``);
- the web app (console + Flask-SocketIO, threading mode, werkzeug's threaded server) in a second
  child process on a free port; a console operator (tenant administrator, so ``devices.view``)
  logs in over HTTP and a python-socketio client connects to ``/live`` with that login;
- ``--pos`` simulated POS terminals (``Fleet``) on one network thread of this process, bound
  to one canteen merchant, free-amount mode, meal periods over the whole day, no limits.

For each offered rate (``--rates``, sales per second spread over every terminal): ``--warmup``
seconds, then ``--seconds`` measured. Per rate: sales answered online per second, the decision
round trip at the POS (present -> decision callback, p50/p99), answers timed out (the POS then
decides offline), ``canteen_sales`` rows and ledger entries committed per second (counted in
the database at both ends of the window), and the live-feed lag: from the POS's decision to the
Socket.IO client receiving that sale's ``tap`` event (matched by device and amount, which is
unique per sale), p50/p99, and sales the feed never delivered. The ladder stops after the
first rate at which answers time out.

At the end the books are asserted: every allowed online tap has exactly one online sale and one
ledger entry (a denied one neither), the POS saw as many allowed online sales as the platform
holds, and ``ledger.reconcile.verify`` passes for the tenant.

Usage: .venv/bin/python bench/bench_canteen.py [--pos 200] [--rates 10,25,50,100,200,400]
                                               [--seconds 10] [--warmup 3]
                                               [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_devices import child, each_backend, free_port, machine, pct, uid_of, wait

ROOT = Path(__file__).resolve().parents[1]
PLATFORM_PW = "bench-platform-password"
SECRET = "bench-secret-key-0123456789abcdef"
OPERATOR_PW = "bench-operator-password-1"
CARDS = 500
TOP_UP_FEN = 100_000_000  # far more than a card spends in a run
AMOUNTS = 20_000  # sale k costs 100 + k % AMOUNTS fen: unique per device within a run


# -- child processes: the bridge and the web app ------------------------------------------


def bridge_main(url: str, port: int, ready: Any, stop: Any) -> None:
    """Run one bridge with the installed modules (child process) until ``stop`` is set."""
    from onecard.platform.db.engine import make_engine, make_session_factory
    from onecard.platform.devices.bridge import Bridge, Connection
    from onecard.platform.devices.broker import PLATFORM_USER
    from onecard.platform.registry import Registry
    from onecard.platform.secrets import SecretBox

    sf = make_session_factory(make_engine(url))
    conn = Connection("127.0.0.1", port, PLATFORM_USER, PLATFORM_PW, client_id="bench-bridge")
    bridge = Bridge(sf, conn, box=SecretBox(SECRET), registry=Registry.load())
    bridge.start()
    if not bridge.subscribed.wait(60):
        raise SystemExit("bridge did not subscribe")
    ready.set()
    stop.wait()
    bridge.stop()


def web_main(url: str, port: int, ready: Any, stop: Any) -> None:
    """Serve the web app (console + Socket.IO) on ``port`` (child process) until ``stop``."""
    import logging

    from werkzeug.serving import make_server

    from onecard.config import DatabaseSettings, SecuritySettings, Settings
    from onecard.web import create_app

    settings = Settings(
        database=DatabaseSettings(url=url), security=SecuritySettings(secret_key=SECRET)
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    app = create_app(settings)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ready.set()
    stop.wait()
    app.extensions["onecard.live"].stopped.set()
    server.shutdown()


# -- the canteen world ----------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """The bench tenant: its slug, the operator's login and the POS credentials."""

    tenant_id: int
    slug: str
    operator: str
    credentials: dict[str, Any]


def setup_world(url: str, pos: int) -> tuple[Any, World]:
    """Migrate; a tenant with canteen set up as ``onecard run`` does (merchant, meal periods
    over the whole day, a rule without limits), ``pos`` POS terminals bound to the merchant,
    CARDS students with topped-up purses, and a console operator."""
    from onecard.config import Settings
    from onecard.embedded import MEALS
    from onecard.modules.canteen import rules
    from onecard.modules.canteen import setup as canteen
    from onecard.modules.canteen.services import KEY as CANTEEN
    from onecard.platform.actors import Actor
    from onecard.platform.authz.services import create_operator
    from onecard.platform.db.engine import make_engine, make_session_factory
    from onecard.platform.db.migrate import upgrade
    from onecard.platform.db.tenancy import tenant_scope
    from onecard.platform.tenants.services import create_site, create_tenant, set_module_enabled
    from onecard.web import policy_from

    engine = make_engine(url)
    upgrade(engine)
    sf = make_session_factory(engine)
    now, tag = datetime.now(UTC), uuid.uuid4().hex[:6]
    with sf() as s:
        tenant = create_tenant(
            s, f"bench{tag}", "Bench canteen", actor=Actor.system("bench"), now=now
        )
        s.commit()
        tid, slug = tenant.id, tenant.slug
    actor = Actor.system("bench", tenant_id=tid)
    with sf() as s, tenant_scope(tid):
        set_module_enabled(s, CANTEEN, True, actor=actor, now=now)
        site = create_site(s, "bench", "Bench campus", "Asia/Shanghai", actor=actor, now=now)
        merchant = canteen.create_merchant(
            s, "bench-1", "Bench canteen", site, actor=actor, now=now
        )
        periods = [rules.MealPeriod(k, a, b) for k, a, b in MEALS]
        canteen.set_meal_periods(s, site, periods, actor=actor, now=now)
        canteen.set_rule(s, "student", rules.HolderRule(), actor=actor, now=now)
        creds = _register_pos(s, merchant, site, pos, tag, actor, now)
        _issue_cards(s, tag, actor, now)
        operator = f"bench-op-{tag}"
        policy = policy_from(Settings())
        create_operator(
            s, operator, OPERATOR_PW, actor=actor, now=now, policy=policy, roles=["tenant_admin"]
        )
        s.commit()
    analyze(engine)
    return sf, World(tid, slug, operator, creds)


def analyze(engine: Any) -> None:
    """Refresh the planner's statistics after the bulk set-up (a production database has
    them; without, PostgreSQL may scan a tenant's ledger lines instead of one entry's)."""
    from sqlalchemy import text

    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def _register_pos(
    s: Any, merchant: Any, site: Any, n: int, tag: str, actor: Any, now: datetime
) -> dict[str, Any]:
    from onecard.device_agents.protocol.codes import DeviceKind
    from onecard.modules.canteen import rules
    from onecard.modules.canteen import setup as canteen
    from onecard.modules.canteen.services import KEY as CANTEEN
    from onecard.platform.devices.services import NewDevice, add_device

    creds: dict[str, Any] = {}
    for i in range(n):
        device_id = f"b{tag}-pos-{i:04d}"
        spec = NewDevice(device_id, "pos", module=CANTEEN, site_id=site.id, name=f"POS {i}")
        device, password = add_device(s, spec, actor=actor, now=now)
        canteen.add_pos(s, merchant, device, mode=rules.Mode.FREE, actor=actor, now=now)
        creds[device_id] = (device_id, password, DeviceKind.POS)
    return creds


def _issue_cards(s: Any, tag: str, actor: Any, now: datetime) -> None:
    from onecard.platform.cards.lifecycle import NewCard, issue_card
    from onecard.platform.ledger import operations as ops
    from onecard.platform.people.schemas import PersonCreate
    from onecard.platform.people.services import create_person

    for i in range(CARDS):
        person = create_person(
            s,
            PersonCreate(person_no=f"S{tag}{i:05d}", name=f"Bench {i}", identity_class="student"),
            actor=actor,
            now=now,
        )
        issue_card(
            s, person, NewCard(card_no=f"B{tag}{i:06d}", uid=uid_of(i)), actor=actor, now=now
        )
        ops.top_up(s, person.id, TOP_UP_FEN, channel="cash", actor=actor, now=now)


def committed(sf: Any, tid: int) -> tuple[int, int]:
    """(online canteen sales, ledger entries) of the tenant."""
    from sqlalchemy import func, select

    from onecard.modules.canteen.models import Sale
    from onecard.platform.db.tenancy import tenant_scope
    from onecard.platform.ledger.models import Entry

    with sf() as s, tenant_scope(tid):
        sales = s.scalar(select(func.count(Sale.id)).where(Sale.source == "online")) or 0
        entries = s.scalar(select(func.count(Entry.id))) or 0
    return int(sales), int(entries)


# -- the books ------------------------------------------------------------------------------


def books(sf: Any, tid: int) -> dict[str, Any]:
    """Match every online tap with its sale and entry; verify the tenant's ledger."""
    from sqlalchemy import func, select

    from onecard.modules.canteen.checks import tap_sale_problems
    from onecard.modules.canteen.models import Sale
    from onecard.platform.db.tenancy import tenant_scope
    from onecard.platform.devices.models import Device, DeviceTap
    from onecard.platform.ledger.reconcile import verify

    with sf() as s, tenant_scope(tid):
        taps = s.execute(
            select(Device.device_id, DeviceTap).join(DeviceTap, DeviceTap.device_pk == Device.id)
        ).all()
        problems = tap_sale_problems(s, [(device_id, tap) for device_id, tap in taps])
        offline = s.scalar(select(func.count(Sale.id)).where(Sale.source == "offline")) or 0
        report = verify(s)
    allowed = sum(1 for _d, t in taps if t.allow)
    return {
        "allowed": allowed,
        "denied": len(taps) - allowed,
        "offline": int(offline),
        "problems": problems,
        "ledger": report,
    }


# -- the live feed --------------------------------------------------------------------------


class LiveFeed:
    """A console's ``/live`` socket: when each sale's ``tap`` event arrived, by (device, amount)."""

    def __init__(self, base: str, world: World) -> None:
        import requests
        import socketio

        http = requests.Session()
        page = http.get(f"{base}/console/login", timeout=20)
        found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if not found:
            raise RuntimeError("no CSRF token on the console login page")
        form = {
            "tenant": world.slug,
            "username": world.operator,
            "password": OPERATOR_PW,
            "csrf_token": found.group(1),
        }
        resp = http.post(f"{base}/console/login", data=form, allow_redirects=False, timeout=20)
        if resp.status_code != 303:
            raise RuntimeError(f"console login failed: {resp.status_code}")
        self.arrived: dict[tuple[str, str], float] = {}
        self.client = socketio.Client(http_session=http, reconnection=False)
        self.client.on("tap", self._tap, namespace="/live")
        self.client.connect(base, namespaces=["/live"], wait_timeout=20)
        self.transport = self.client.transport()

    def _tap(self, data: dict[str, Any]) -> None:
        self.arrived[(data["device"], data["amount"] or "")] = time.perf_counter()

    def close(self) -> None:
        self.client.disconnect()


# -- one offered rate -----------------------------------------------------------------------


@dataclass
class Step:
    """What the driver saw during one offered rate."""

    rate: float
    rtt: list[float] = field(default_factory=list)
    decided: dict[tuple[str, str], float] = field(default_factory=dict)  # measured sales
    timeouts: int = 0
    allowed_online: int = 0  # every allowed online answer, warm-up included
    denied_online: int = 0


def run_rate(f: Any, sf: Any, world: World, feed: LiveFeed, rate: float, args: Any) -> dict:
    """Offer ``rate`` sales per second for warm-up + window; return the step's figures."""
    from onecard.device_agents.runtime.agent import Presented

    step = Step(rate)
    state = {"issued": 0, "begin": 0.0, "stop": False, "measure": False}
    n = len(f.terminals)

    def done(device: str, amount: str, sent: float, warm: bool) -> Callable[[Any], None]:
        def _done(decision: Any) -> None:
            if not decision.online:
                step.timeouts += warm
                return
            at = time.perf_counter()
            if decision.allow:
                step.allowed_online += 1
            else:
                step.denied_online += 1
            if warm:
                step.rtt.append((at - sent) * 1000)
                step.decided[(device, amount)] = at

        return _done

    def driver() -> None:
        if state["stop"]:
            return
        due = int((time.monotonic() - state["begin"]) * rate) - state["issued"]
        for _ in range(max(0, due)):
            k = args.counter
            args.counter = k + 1
            state["issued"] += 1
            term = f.terminals[(k * 7919) % n]
            fen = 100 + k % AMOUNTS
            cb = done(term.device, f"{fen / 100:.2f}", time.perf_counter(), state["measure"])
            term.agent.present(Presented.uid(uid_of(k % CARDS), fen), cb)
        f.loop.call_later(min(0.01, 1.0 / rate), driver)

    def begin() -> None:
        state["begin"] = time.monotonic()
        driver()

    f.loop.call(begin)
    time.sleep(args.warmup)
    c0, t0 = committed(sf, world.tenant_id), time.monotonic()
    f.loop.call(lambda: state.__setitem__("measure", True))
    time.sleep(args.seconds)
    f.loop.call(lambda: state.__setitem__("stop", True))
    c1, t1 = committed(sf, world.tenant_id), time.monotonic()
    issued, elapsed = state["issued"], t1 - state["begin"]
    time.sleep(3)  # the last answers, and the live feed's last polls
    return figures(step, feed, issued / elapsed, (c1[0] - c0[0], c1[1] - c0[1]), t1 - t0, args)


def figures(
    step: Step, feed: LiveFeed, offered: float, counts: tuple[int, int], span: float, args: Any
) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(k not in feed.arrived for k in step.decided):
        time.sleep(0.2)
    lags = [(feed.arrived[k] - t) * 1000 for k, t in step.decided.items() if k in feed.arrived]
    return {
        "rate": step.rate,
        "offered": offered,
        "answered": len(step.rtt) / args.seconds,
        "p50": pct(step.rtt, 50),
        "p99": pct(step.rtt, 99),
        "timeouts": step.timeouts,
        "sales": counts[0] / span,
        "entries": counts[1] / span,
        "lag50": pct(lags, 50),
        "lag99": pct(lags, 99),
        "missed": len(step.decided) - len(lags),
        "allowed_online": step.allowed_online,
        "denied_online": step.denied_online,
    }


# -- a backend ------------------------------------------------------------------------------


def run_backend(name: str, url: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from onecard.device_agents.protocol.codes import DeviceKind
    from onecard.device_agents.runtime.mqtt import BrokerAddress
    from onecard.device_agents.sim.fleet import Fleet, FleetSettings
    from onecard.platform.devices.broker import EmbeddedBroker, Listener
    from onecard.platform.devices.services import all_credentials

    t = time.monotonic()
    sf, world = setup_world(url, args.pos)
    print(f"[{name}] setup {time.monotonic() - t:.1f} s", flush=True)
    with sf() as s:
        devices = all_credentials(s)
    port, web_port = free_port(), free_port()
    broker = EmbeddedBroker(
        folder / "mqtt", Listener(port), platform_password=PLATFORM_PW, devices=devices
    )
    broker.start()
    steps: list[dict[str, Any]] = []
    fleet = feed = None
    try:
        with child(bridge_main, url, port) as bridge_pid, child(web_main, url, web_port):
            print(f"[{name}] bridge pid {bridge_pid}", flush=True)
            feed = LiveFeed(f"http://127.0.0.1:{web_port}", world)
            fleet = Fleet(
                FleetSettings(
                    devices=args.pos,
                    kinds=(DeviceKind.POS,),
                    broker=BrokerAddress("127.0.0.1", port),
                    folder=folder / "fleet",
                    credentials=world.credentials,
                    tap_rate=1e-6,
                    cards=CARDS,
                    agent={"heartbeat_s": 60.0, "tap_timeout_s": args.timeout},
                )
            )
            fleet.taps = False
            f = fleet.start()
            wait(lambda: f.online() == args.pos, 120, "all POS online", 0.05)
            time.sleep(2)  # hellos, time syncs and list states settle
            for rate in args.rates:
                step = run_rate(f, sf, world, feed, rate, args)
                steps.append(step)
                print(f"[{name}] {_line(step)}", flush=True)
                if step["timeouts"]:
                    break
            f.drain(timeout=120)  # timed-out sales became records; let them upload
            time.sleep(2)
            fleet.stop()
            fleet = None
    finally:
        if feed is not None:
            feed.close()
        if fleet is not None:
            fleet.stop()
        broker.stop()
    held = books(sf, world.tenant_id)
    seen = sum(st["allowed_online"] for st in steps)
    report = held["ledger"]
    print(
        f"[{name}] books: {held['allowed']} allowed online taps (POS saw {seen}), "
        f"{held['denied']} denied, {held['offline']} offline sales (timed-out answers "
        f"uploaded as records), {len(held['problems'])} problems; ledger {report.entries} "
        f"entries, {report.lines} lines, ok={report.ok}",
        flush=True,
    )
    assert not held["problems"], held["problems"][:10]
    assert held["denied"] == 0, "a sale was denied: the purses or the rule are wrong"
    assert held["allowed"] == seen or any(st["timeouts"] for st in steps), (held["allowed"], seen)
    assert report.ok, report.problems[:10]
    return {"backend": name, "steps": steps, "books": held, "transport": feed.transport}


def _line(st: dict[str, Any]) -> str:
    return (
        f"offered {st['offered']:.0f}/s answered {st['answered']:.0f}/s "
        f"rtt p50 {st['p50']:.1f} p99 {st['p99']:.1f} ms timeouts {st['timeouts']} "
        f"sales {st['sales']:.0f}/s entries {st['entries']:.0f}/s "
        f"feed lag p50 {st['lag50']:.0f} p99 {st['lag99']:.0f} ms missed {st['missed']}"
    )


def table(results: list[dict[str, Any]]) -> str:
    head = [
        "backend",
        "offered /s",
        "answered online /s",
        "round trip p50 ms",
        "p99 ms",
        "timed out",
        "sales committed /s",
        "entries committed /s",
        "feed lag p50 ms",
        "p99 ms",
        "not in feed",
    ]
    rows = [head]
    for r in results:
        for st in r["steps"]:
            rows.append(
                [
                    r["backend"],
                    f"{st['offered']:.0f}",
                    f"{st['answered']:.0f}",
                    f"{st['p50']:.1f}",
                    f"{st['p99']:.1f}",
                    str(st["timeouts"]),
                    f"{st['sales']:.0f}",
                    f"{st['entries']:.0f}",
                    f"{st['lag50']:.0f}",
                    f"{st['lag99']:.0f}",
                    str(st["missed"]),
                ]
            )
    widths = [max(len(x[i]) for x in rows) for i in range(len(head))]
    out = []
    for n, row in enumerate(rows):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pos", type=int, default=200, help="simulated POS terminals")
    p.add_argument("--rates", default="10,25,50,100,200,400", help="offered sales per second")
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per rate")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up per rate")
    p.add_argument("--timeout", type=float, default=2.0, help="POS answer timeout, s")
    p.add_argument("--backends", default="sqlite,postgres")
    args = p.parse_args()
    args.rates = [float(x) for x in args.rates.split(",")]
    args.counter = 0
    print(f"machine: {machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)

    def one(name: str, url: str, folder: Path) -> dict[str, Any]:
        return run_backend(name, url, args, folder)

    results = each_backend(args.backends, "bench-canteen", one)
    print()
    print(
        f"machine: {machine()}; {args.pos} POS terminals; live feed over "
        f"{', '.join(sorted({r['transport'] for r in results}))}"
    )
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
