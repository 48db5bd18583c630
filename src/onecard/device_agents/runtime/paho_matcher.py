"""A topic-filter matcher for paho clients that leaves no garbage cycle per message.

paho-mqtt 2.x looks up ``message_callback_add`` filters for every message it receives
(``Client._handle_on_message`` → ``MQTTMatcher.iter_match``), even when no filter was ever
added. Its ``iter_match`` defines a recursive generator function inside itself; that function
refers to itself through its closure, so every received message leaves a reference cycle (the
function, its cells and a generator) that only the cyclic garbage collector can free. In the
bridge that was about one function and three cells per message: under 500 taps/s the young
generation filled with them and a collection of 20-60 ms stopped every thread of the bridge
once every 10-20 s; in the simulator fleet (1,000 clients in one process) the same garbage
drove full collections of 100 ms that stalled every simulated terminal at once (device bench,
docs/devices.md).

:func:`use_acyclic_matcher` gives a client :class:`AcyclicMatcher`: the same trie, the same
matches, found with an explicit stack. It must be called before any ``message_callback_add``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.matcher import MQTTMatcher

log = logging.getLogger(__name__)

_FILTERS_ATTRIBUTE = "_on_message_filtered"  # paho 2.x; checked by tests/device_agents


class AcyclicMatcher(MQTTMatcher):
    """paho's ``MQTTMatcher`` whose ``iter_match`` allocates no reference cycle.

    Matches as paho does (MQTT 3.1.1 §4.7): ``+`` matches one level, ``#`` the rest (including
    none), and neither matches a first level that starts with ``$``.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def iter_match(self, topic: str) -> Iterator[Any]:
        """Every value whose filter matches ``topic`` (an iterator, as paho expects)."""
        root = self._root
        if not root._children:
            return iter(())  # the common case: no filters, nothing to walk
        parts = topic.split("/")
        normal = not topic.startswith("$")
        found: list[Any] = []
        stack = [(root, 0)]
        while stack:
            node, i = stack.pop()
            children = node._children
            if i == len(parts):
                if node._content is not None:
                    found.append(node._content)
            else:
                exact = children.get(parts[i])
                if exact is not None:
                    stack.append((exact, i + 1))
                if "+" in children and (normal or i > 0):
                    stack.append((children["+"], i + 1))
            if "#" in children and (normal or i > 0):
                content = children["#"]._content
                if content is not None:
                    found.append(content)
        return iter(found)


def use_acyclic_matcher(client: mqtt.Client) -> bool:
    """Give ``client`` an :class:`AcyclicMatcher` (before any ``message_callback_add``).

    Returns whether it did: a paho release without the attribute keeps its own matcher (the
    client works as before; a test of this package fails, so the upgrade is noticed)."""
    current = getattr(client, _FILTERS_ATTRIBUTE, None)
    if not isinstance(current, MQTTMatcher):
        log.debug("paho has no %s matcher; keeping its own", _FILTERS_ATTRIBUTE)
        return False
    if isinstance(current, AcyclicMatcher):
        return True
    if current._root._children:
        raise RuntimeError("use_acyclic_matcher must run before message_callback_add")
    setattr(client, _FILTERS_ATTRIBUTE, AcyclicMatcher())
    return True
