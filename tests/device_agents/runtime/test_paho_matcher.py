"""`paho_matcher`: the same topic-filter matches as paho's, without a garbage cycle per message."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.matcher import MQTTMatcher

from onecard.device_agents.runtime.paho_matcher import AcyclicMatcher, use_acyclic_matcher

LEVEL = st.sampled_from(["a", "b", "$sys", ""])
TOPIC = st.lists(LEVEL, min_size=1, max_size=4).map("/".join)
FILTER = st.lists(st.sampled_from(["a", "b", "$sys", "", "+"]), min_size=1, max_size=4).flatmap(
    lambda levels: st.sampled_from(["/".join(levels), "/".join([*levels, "#"]), "#"])
)


def _both(filters: list[str]) -> tuple[MQTTMatcher, AcyclicMatcher]:
    theirs, ours = MQTTMatcher(), AcyclicMatcher()
    for f in filters:
        theirs[f] = ours[f] = f
    return theirs, ours


@given(st.lists(FILTER, max_size=6), TOPIC)
def test_matches_what_paho_matches(filters: list[str], name: str) -> None:
    theirs, ours = _both(filters)
    assert sorted(ours.iter_match(name)) == sorted(theirs.iter_match(name))


def test_wildcards_and_dollar_topics() -> None:
    _theirs, ours = _both(["oc/v1/+/up/#", "#", "oc/#", "$SYS/#", "+/v1/d1/state"])
    assert sorted(ours.iter_match("oc/v1/d1/up/tap")) == ["#", "oc/#", "oc/v1/+/up/#"]
    assert sorted(ours.iter_match("oc/v1/d1/state")) == ["#", "+/v1/d1/state", "oc/#"]
    assert sorted(ours.iter_match("$SYS/broker/load")) == ["$SYS/#"]  # no `#`, no `+` first
    assert list(AcyclicMatcher().iter_match("oc/v1/d1/up/tap")) == []


def _cycles_left(matcher: MQTTMatcher, n: int) -> int:
    """Objects the cyclic collector frees after ``n`` matches (nothing else runs meanwhile)."""
    gc.collect()
    gc.disable()
    try:
        for i in range(n):
            list(matcher.iter_match(f"oc/v1/d{i}/up/tap"))
        return gc.collect()
    finally:
        gc.enable()


def test_matching_leaves_no_garbage_cycle() -> None:
    theirs, ours = _both(["oc/v1/+/down/#"])
    assert _cycles_left(ours, 500) == 0
    assert _cycles_left(AcyclicMatcher(), 500) == 0
    # Why this module exists: paho's own matcher leaves a cycle per match. If this starts
    # failing, paho fixed it, and `paho_matcher` can go.
    assert _cycles_left(theirs, 500) >= 500


def test_refuses_to_replace_filters_already_added() -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5)
    client.message_callback_add("oc/#", lambda *_a: None)
    with pytest.raises(RuntimeError, match="before message_callback_add"):
        use_acyclic_matcher(client)


def test_callbacks_added_afterwards_still_route() -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5)
    assert use_acyclic_matcher(client)
    assert use_acyclic_matcher(client)  # twice: keeps the same matcher
    hit: list[str] = []
    client.message_callback_add("oc/v1/+/down/tap", lambda _c, _u, m: hit.append(m.topic))
    msg = mqtt.MQTTMessage(topic=b"oc/v1/d1/down/tap")
    client._handle_on_message(msg)  # paho's dispatch of a received PUBLISH
    assert hit == ["oc/v1/d1/down/tap"]


@pytest.fixture
def two_clients(broker) -> Iterator[tuple[mqtt.Client, mqtt.Client, list[object], threading.Event]]:  # type: ignore[no-untyped-def]
    """A receiver with the acyclic matcher subscribed to ``t/#`` and a sender, both connected to
    the private Mosquitto."""
    got: list[object] = []
    done = threading.Event()
    receiver = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="rx", protocol=mqtt.MQTTv5)
    assert use_acyclic_matcher(receiver)
    subscribed = threading.Event()
    receiver.on_subscribe = lambda *_a: subscribed.set()

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        got.append(m.payload)
        if len(got) >= 300:
            done.set()

    receiver.on_message = on_message
    receiver.connect("127.0.0.1", broker.port)
    receiver.subscribe("t/#", qos=1)
    receiver.loop_start()
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tx", protocol=mqtt.MQTTv5)
    sender.connect("127.0.0.1", broker.port)
    sender.loop_start()
    assert subscribed.wait(10), "the receiver did not subscribe"
    yield receiver, sender, got, done
    for c in (receiver, sender):
        c.disconnect()
        c.loop_stop()


def test_a_client_receiving_messages_leaves_no_garbage_cycle(two_clients) -> None:  # type: ignore[no-untyped-def]
    """Through the real broker: 300 messages received by a client with the acyclic matcher
    leave (next to) nothing for the cyclic collector; with paho's matcher they left four
    objects each (a function, two cells, a generator)."""
    _receiver, sender, got, done = two_clients
    gc.collect()
    gc.disable()
    try:
        for i in range(300):
            sender.publish(f"t/{i}", b"x", qos=1)
        assert done.wait(20), f"received {len(got)} of 300"
        left = gc.collect()
    finally:
        gc.enable()
    assert len(got) == 300
    assert left < 50  # paho's own matcher: at least 1,200
