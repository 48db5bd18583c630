"""Personalities in the agent: the terminal behaviour a device kind adds to the protocol agent.

The protocol agent (`agent.Agent`) knows taps, records, lists and bundles; a personality knows
what its kind of terminal shows and beeps and how it decides alone. The agent calls it at three
points: a verified configuration bundle came into force (`Personality.configure`, also for the
bundle on disk at start), the platform answered a tap (`Personality.online`), and a tap must be
decided without the platform (`Personality.offline`, which stores the record itself). A kind
without a personality keeps the agent's generic offline rule (`runtime.offline`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from onecard.device_agents.protocol.codes import DeviceKind
from onecard.device_agents.runtime.pos_terminal import PosTerminal

if TYPE_CHECKING:
    from onecard.device_agents.runtime.agent import Agent, AgentSettings, LocalDecision, Presented
    from onecard.device_agents.runtime.store import AgentStore


class Personality(Protocol):
    """What a kind of terminal adds to the agent (see the module docstring)."""

    def configure(self, body: Mapping[str, Any]) -> None:
        """A verified configuration bundle's body came into force."""

    def online(self, decision: LocalDecision, presented: Presented) -> LocalDecision:
        """The platform's decision as this terminal shows it (display text, beep)."""

    def offline(self, agent: Agent, presented: Presented, req_id: str | None) -> LocalDecision:
        """Decide ``presented`` alone, store its record through ``agent.store_record`` and
        return what the terminal shows; ``req_id`` names the online request that timed out."""


def load_personality(settings: AgentSettings, store: AgentStore) -> Personality | None:
    """The personality of ``settings.kind``, its state read from ``store``; ``None`` for a kind
    that has none (the generic agent)."""
    if settings.kind is DeviceKind.POS:
        return PosTerminal(settings.device_id, store)
    return None
