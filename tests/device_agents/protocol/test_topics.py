"""Topic names: building, parsing, device ids and the subscriptions each side uses."""

import pytest

from onecard.device_agents.protocol.codes import ErrorReason, ProtocolError
from onecard.device_agents.protocol.topics import (
    BRIDGE_SUBSCRIPTION,
    Topic,
    device_subscription,
    parse_topic,
    topic,
)


@pytest.mark.parametrize("kind", list(Topic))
def test_every_topic_parses_back(kind):
    assert parse_topic(topic("gate-07", kind)) == ("gate-07", kind)


def test_topics_follow_the_contract():
    assert topic("pos-1", Topic.RECORDS) == "oc/v1/pos-1/up/records"
    assert topic("pos-1", Topic.DECISION) == "oc/v1/pos-1/down/tap"
    assert topic("pos-1", Topic.STATE) == "oc/v1/pos-1/state"
    assert device_subscription("pos-1") == "oc/v1/pos-1/down/#"
    assert BRIDGE_SUBSCRIPTION == "$share/bridge/oc/v1/+/up/#"


def test_only_state_and_config_are_retained_and_only_state_is_qos0():
    assert {t for t in Topic if t.retained} == {Topic.STATE, Topic.CONFIG}
    assert {t for t in Topic if t.qos == 0} == {Topic.STATE}


@pytest.mark.parametrize("device", ["ab", "Pos-1", "pos_1", "x" * 65, "pos/1", "+", "#", ""])
def test_a_bad_device_id_is_refused(device):
    with pytest.raises(ProtocolError) as caught:
        topic(device, Topic.HELLO)

    assert caught.value.reason is ErrorReason.BAD_DEVICE_ID


@pytest.mark.parametrize(
    "name",
    ["oc/v2/pos-1/up/hello", "oc/v1/pos-1/up/nope", "oc/v1/pos-1", "x/oc/v1/pos-1/state"],
)
def test_a_foreign_topic_is_refused(name):
    with pytest.raises(ProtocolError) as caught:
        parse_topic(name)

    assert caught.value.reason is ErrorReason.BAD_TOPIC
