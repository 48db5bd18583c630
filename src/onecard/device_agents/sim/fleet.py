"""Many virtual terminals in one process: one `NetLoop`, one paho client per terminal, one
SQLite file for all stores (a device column) and a config folder per terminal.

Faults (any combination): ``offline`` (network outages of a few seconds), ``skew`` (device clocks
off by up to ten minutes), ``clock-reset`` (a clock back at 1970 after a reboot), ``duplicate``
(a records batch published twice), ``reorder`` (a batch held back and sent after the next),
``power-loss`` (a record stored and never sent, then the agent restarts from its store),
``wipe`` (the store lost: a new epoch). A broker restart is simply survived (reconnect with
backoff). `FleetCounters` sum what every terminal did.

Each terminal runs its kind's personality (`runtime.personality`): a POS decides offline as a
canteen POS does, with its MAC key from ``FleetSettings.pos_keys`` (without one it makes no
offline sales) and its setup from the configuration bundles the platform sends.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from onecard.device_agents.personalities.pos_records import PosKey
from onecard.device_agents.protocol.codes import DeviceKind
from onecard.device_agents.runtime.agent import Agent, AgentCounters, AgentSettings, Presented
from onecard.device_agents.runtime.clock import DeviceClock, system_ms
from onecard.device_agents.runtime.configfiles import ConfigFiles
from onecard.device_agents.runtime.host import new_epoch
from onecard.device_agents.runtime.mqtt import BrokerAddress, MqttLink, NetLoop
from onecard.device_agents.runtime.personality import Personality, load_personality
from onecard.device_agents.runtime.pos_terminal import PosTerminal
from onecard.device_agents.runtime.store import AgentStore, open_database

FAULTS = ("offline", "skew", "clock-reset", "duplicate", "reorder", "power-loss", "wipe")
AMOUNT_KINDS = {DeviceKind.POS, DeviceKind.BUS, DeviceKind.METER, DeviceKind.VALVE}


@dataclass(frozen=True)
class FleetSettings:
    """What to simulate. ``credentials``: device id → (username, password, kind or None);
    ``pos_keys``: device id → the POS's record MAC key (installed into its store)."""

    devices: int
    kinds: tuple[DeviceKind, ...]
    broker: BrokerAddress
    folder: Path
    faults: frozenset[str] = frozenset()
    credentials: dict[str, tuple[str, str, DeviceKind | None]] | None = None
    tap_rate: float = 0.2
    fault_rate: float = 0.02
    seed: int = 1
    prefix: str = "sim"
    cards: int = 5000
    public_key_hex: str | None = None
    agent: dict[str, float | int] = field(default_factory=dict)
    pos_keys: dict[str, PosKey] = field(default_factory=dict)


@dataclass
class FleetCounters:
    """Sum over all terminals, plus the faults injected."""

    agents: AgentCounters = field(default_factory=AgentCounters)
    outages: int = 0
    clock_resets: int = 0
    power_losses: int = 0
    wipes: int = 0
    reordered: int = 0


def load_credentials(path: Path) -> dict[str, tuple[str, str, DeviceKind | None]]:
    """Read the platform's credentials file: ``{device: {username, password[, kind]}}``."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, tuple[str, str, DeviceKind | None]] = {}
    for device, entry in raw.items():
        kind = entry.get("kind")
        out[device] = (entry["username"], entry["password"], DeviceKind(kind) if kind else None)
    return out


class Terminal:
    """One virtual terminal: agent, link, clock and its injected faults."""

    def __init__(self, fleet: Fleet, device: str, kind: DeviceKind, broker: BrokerAddress):
        self.fleet = fleet
        self.device = device
        self.kind = kind
        self.broker = broker
        self.rng = random.Random(f"{fleet.settings.seed}:{device}")
        self.counters = AgentCounters()
        self.clock = DeviceClock(fleet.wall)
        self.held: tuple[str, bytes, int, bool, float] | None = None
        self.next_tap = fleet.loop.monotonic() + self.rng.expovariate(fleet.settings.tap_rate)
        self.down_until: float | None = None
        self.agent, self.link = self._build()

    def _build(self) -> tuple[Agent, MqttLink]:
        fleet = self.fleet
        store = AgentStore(fleet.conn, self.device, new_epoch=new_epoch(self.rng))
        known = {f.name for f in dataclasses.fields(AgentSettings)}
        tuning = {k: v for k, v in fleet.settings.agent.items() if k in known}
        tuning.setdefault("heartbeat_s", 30.0)
        tuning.setdefault("time_sync_s", 600.0)
        settings = AgentSettings(device_id=self.device, kind=self.kind, **tuning)  # type: ignore[arg-type]
        agent = Agent(
            settings,
            store,
            ConfigFiles(fleet.settings.folder / "config" / self.device, fsync=False),
            clock=self.clock,
            monotonic=fleet.loop.monotonic,
            rng=self.rng,
            public_key=fleet.public_key,
            counters=self.counters,
            personality=self._personality(settings, store),
        )
        link = MqttLink(fleet.loop, agent, self.broker, rng=self.rng, backoff_base=0.2)
        agent.attach(self._publish)
        return agent, link

    def _personality(self, settings: AgentSettings, store: AgentStore) -> Personality | None:
        """The kind's personality; a POS gets its MAC key again after every (re)build."""
        found = load_personality(settings, store)
        key = self.fleet.settings.pos_keys.get(self.device)
        if key is not None and isinstance(found, PosTerminal):
            found.install_key(key)
        return found

    # uploads with faults ------------------------------------------------------------------

    def _publish(self, name: str, payload: bytes, qos: int, retain: bool) -> None:
        faults = self.fleet.settings.faults
        if name.endswith("/up/records"):
            if "reorder" in faults and self.held is None and self.rng.random() < 0.1:
                self.held = (name, payload, qos, retain, self.fleet.loop.monotonic() + 0.3)
                self.fleet.counters.reordered += 1
                return
            if "duplicate" in faults and self.rng.random() < 0.1:
                self.link.publish(name, payload, qos, retain)
                self.counters.duplicates_sent += payload.count(b'"seq":')
        self.link.publish(name, payload, qos, retain)
        self.release_held(force=True)

    def release_held(self, *, force: bool = False) -> None:
        """Send a held-back batch (after the next one, or when its time is up)."""
        if self.held is not None and (force or self.fleet.loop.monotonic() >= self.held[4]):
            name, payload, qos, retain, _ = self.held
            self.held = None
            self.link.publish(name, payload, qos, retain)

    # behaviour ----------------------------------------------------------------------------

    def tick(self, now: float, taps: bool) -> None:
        """Poll the agent, tap cards, inject faults."""
        if self.down_until is not None:
            if now >= self.down_until:
                self.down_until = None
                self.link.go_online()
            return
        self.agent.poll()
        self.release_held()
        if taps and now >= self.next_tap:
            self.next_tap = now + self.rng.expovariate(self.fleet.settings.tap_rate)
            self._tap()
        if taps and self.fleet.settings.faults and self.rng.random() < self.fleet.fault_p:
            self._fault(now)

    def _tap(self) -> None:
        card = self.rng.randrange(self.fleet.settings.cards)
        amount = self.rng.randrange(100, 1500) if self.kind in AMOUNT_KINDS else None
        self.agent.present(Presented.uid(f"{0x10000000 + card:08x}", amount))

    def _fault(self, now: float) -> None:
        choices = [f for f in self.fleet.settings.faults if f not in ("skew", "duplicate")]
        if not choices:
            return
        fault = self.rng.choice(choices)
        counters = self.fleet.counters
        if fault == "offline":
            counters.outages += 1
            self.link.go_offline()
            self.down_until = now + self.rng.uniform(1.0, 4.0)
        elif fault == "clock-reset":
            counters.clock_resets += 1
            self.clock.reset_to(self.rng.randrange(1000, 100_000))
            self.agent.bump_clock_epoch()
            self.agent.offset_ms = None
            self.agent.sync_time()
        elif fault == "power-loss":
            counters.power_losses += 1
            self.agent.attach(lambda _t, _p, _q, _r: None)
            self.agent.store_record(event="power_fail", device_time=self.clock.now_ms())
            self._restart(now)
        elif fault == "wipe":
            counters.wipes += 1
            self.counters.records_wiped += self.agent.store.wipe()
            self._restart(now)

    def _restart(self, now: float) -> None:
        self.link.retire()
        self.agent.drop_pending()
        self.held = None
        self.agent, self.link = self._build()
        self.link.stopped = True
        self.down_until = now + self.rng.uniform(0.5, 2.0)

    @property
    def unsent(self) -> int:
        """Records this terminal still has to deliver."""
        return self.agent.store.unsent_count()


def tune_for_the_fleet() -> None:
    """Freeze what exists now out of the garbage collector's scans (the whole process: call it
    once, after building the fleet, as `onecard sim` and the device bench do).

    A fleet's terminals (agents, stores, paho clients) live as long as the process, and every
    full collection scanned all of them: with 1,000 terminals one took about 100 ms, during
    which every simulated terminal stood still at once, which no fleet of separate devices does
    (device bench, PostgreSQL: the 50 taps it delayed were the run's whole p99). Frozen, a
    collection scans only what was made since."""
    gc.collect()
    gc.freeze()


class Fleet:
    """The simulator: build with settings, `start`, `run`, `drain`, `stop`, read `totals`."""

    def __init__(self, settings: FleetSettings, *, wall: Callable[[], int] = system_ms) -> None:
        from onecard.device_agents.protocol.bundles import public_key_from_hex

        self.settings = settings
        self.wall = wall
        self.loop = NetLoop()
        self.counters = FleetCounters()
        self.fault_p = settings.fault_rate * self.loop.tick_s * 5
        settings.folder.mkdir(parents=True, exist_ok=True)
        self.conn = open_database(settings.folder / "fleet.db", synchronous="NORMAL")
        key = settings.public_key_hex
        self.public_key = public_key_from_hex(key) if key else None
        self.taps = True
        self.terminals = [self._terminal(i, device) for i, device in enumerate(self._ids())]
        self._slice = 0

    def _ids(self) -> list[str]:
        creds = self.settings.credentials
        if creds:
            return sorted(creds)[: self.settings.devices]
        kinds = self.settings.kinds
        return [
            f"{self.settings.prefix}-{kinds[i % len(kinds)].value}-{i:04d}"
            for i in range(self.settings.devices)
        ]

    def _terminal(self, i: int, device: str) -> Terminal:
        s = self.settings
        kind = s.kinds[i % len(s.kinds)]
        broker = s.broker
        if s.credentials:
            user, password, listed = s.credentials[device]
            kind = listed or kind
            broker = dataclasses.replace(broker, username=user, password=password)
        terminal = Terminal(self, device, kind, broker)
        if "skew" in s.faults:
            terminal.clock.step(terminal.rng.randrange(-600_000, 600_000))
        return terminal

    def start(self) -> Fleet:
        """Start the loop and connect every terminal (spread over about a second)."""
        self.loop.start()
        spread = 1.0 / max(1, len(self.terminals))
        for i, terminal in enumerate(self.terminals):
            self.loop.call_soon(
                functools.partial(self.loop.call_later, i * spread, terminal.link.start)
            )
        self.loop.every_tick(self._tick)
        return self

    def _tick(self) -> None:
        now = self.loop.monotonic()
        parts = 5
        self._slice = (self._slice + 1) % parts
        for terminal in self.terminals[self._slice :: parts]:
            terminal.tick(now, self.taps)

    def run(self, duration: float) -> None:
        """Let the fleet tap and suffer faults for ``duration`` seconds (real time)."""
        time.sleep(duration)

    def drain(self, timeout: float = 60.0) -> bool:
        """Stop taps and faults, let outages end, wait until nothing is unsent."""
        self.loop.call(lambda: setattr(self, "taps", False))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.loop.call(lambda: sum(t.unsent for t in self.terminals)) == 0:
                return True
            time.sleep(0.1)
        return False

    def online(self) -> int:
        """Terminals connected now."""
        return int(self.loop.call(lambda: sum(t.agent.online for t in self.terminals)))

    def totals(self) -> dict[str, int]:
        """Summed counters (agents and faults) as a flat dict."""

        def collect() -> dict[str, int]:
            out = dict.fromkeys(dataclasses.asdict(AgentCounters()), 0)
            for terminal in self.terminals:
                for k, v in dataclasses.asdict(terminal.counters).items():
                    out[k] += v
            out.update(
                {k: v for k, v in dataclasses.asdict(self.counters).items() if k != "agents"}
            )
            out["unsent"] = sum(t.unsent for t in self.terminals)
            out["devices"] = len(self.terminals)
            return out

        return dict(self.loop.call(collect))

    def stop(self) -> None:
        """Disconnect everyone and stop the loop."""

        def close() -> None:
            for terminal in self.terminals:
                terminal.link.stop()

        self.loop.call(close, timeout=30)
        time.sleep(0.2)
        self.loop.stop()
        self.conn.close()


__all__ = ["FAULTS", "Fleet", "FleetCounters", "FleetSettings", "Terminal", "load_credentials"]
