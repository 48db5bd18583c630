"""One agent in a process: store, config folder, agent, MQTT link and network loop together,
with a blocking `AgentHost.tap` for a reader thread (and tests)."""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from onecard.device_agents.runtime.agent import (
    Agent,
    AgentSettings,
    Handlers,
    LocalDecision,
    Presented,
)
from onecard.device_agents.runtime.clock import DeviceClock
from onecard.device_agents.runtime.configfiles import ConfigFiles
from onecard.device_agents.runtime.mqtt import BrokerAddress, MqttLink, NetLoop
from onecard.device_agents.runtime.offline import OfflineRule, default_rule
from onecard.device_agents.runtime.personality import Personality
from onecard.device_agents.runtime.store import AgentStore, open_database

PersonalityLoader = Callable[[AgentSettings, AgentStore], Personality | None]
"""How a host gets its personality once the store is open (`personality.load_personality`)."""


def new_epoch(rng: random.Random) -> str:
    """A fresh epoch id: 16 hex digits from ``rng``."""
    return f"{rng.getrandbits(64):016x}"


@dataclass
class AgentHost:
    """A running agent; build with `AgentHost.open`, then `start`, `tap`, `stop`."""

    loop: NetLoop
    agent: Agent
    link: MqttLink
    own_loop: bool

    @classmethod
    def open(
        cls,
        settings: AgentSettings,
        store_dir: Path,
        broker: BrokerAddress,
        *,
        public_key: Ed25519PublicKey | None = None,
        handlers: Handlers | None = None,
        rule: OfflineRule = default_rule,
        clock: DeviceClock | None = None,
        rng: random.Random | None = None,
        loop: NetLoop | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        synchronous: str = "FULL",
        personality: PersonalityLoader | None = None,
    ) -> AgentHost:
        """Open (or create) the store in ``store_dir`` and wire everything; ``personality``
        loads the terminal's personality from the store (none: the generic agent)."""
        rng = rng or random.Random(secrets.randbits(64))
        store_dir.mkdir(parents=True, exist_ok=True)
        conn = open_database(store_dir / "agent.db", synchronous=synchronous)
        store = AgentStore(conn, settings.device_id, new_epoch=new_epoch(rng))
        config = ConfigFiles(store_dir / "config" / settings.device_id)
        agent = Agent(
            settings,
            store,
            config,
            clock=clock or DeviceClock(),
            monotonic=monotonic,
            rng=rng,
            public_key=public_key,
            rule=rule,
            handlers=handlers,
            personality=personality(settings, store) if personality else None,
        )
        own = loop is None
        net = loop or NetLoop(monotonic=monotonic)
        link = MqttLink(net, agent, broker, rng=rng)
        return cls(net, agent, link, own)

    def start(self) -> AgentHost:
        """Start the loop (if it is ours), connect, and poll the agent on every tick."""
        if self.own_loop:
            self.loop.start()
        self.loop.every_tick(self.agent.poll)
        self.loop.call_soon(self.link.start)
        return self

    def wait_online(self, timeout: float = 5.0) -> bool:
        """Wait until the agent's session is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.agent.online:
                return True
            time.sleep(0.005)
        return False

    def tap(self, presented: Presented, timeout: float = 10.0) -> LocalDecision:
        """Present a credential and wait for the decision (online or offline)."""
        got: list[LocalDecision] = []
        done = threading.Event()

        def finish(decision: LocalDecision) -> None:
            got.append(decision)
            done.set()

        self.loop.call_soon(lambda: self.agent.present(presented, finish))
        if not done.wait(timeout):
            raise TimeoutError("no decision")
        return got[0]

    def stop(self) -> None:
        """Disconnect cleanly and stop the loop if it is ours."""
        try:
            self.loop.call(self.link.stop)
        finally:
            self.loop.remove_tick(self.agent.poll)
            if self.own_loop:
                self.loop.stop()
            self.agent.store.conn.close()
