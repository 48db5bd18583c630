"""`paho_properties`: paho's v5 properties decoded the same, without rebuilding its tables."""

from __future__ import annotations

import struct

import paho.mqtt._packet as paho_packet
import paho.mqtt.client as paho_client
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from onecard.device_agents.runtime.paho_properties import LeanProperties, use_lean_properties

V5 = MQTTProtocolVersion.MQTTv5
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
PUBLISH_PROPERTIES = st.fixed_dictionaries(
    {},
    optional={
        "PayloadFormatIndicator": st.integers(0, 1),
        "MessageExpiryInterval": st.integers(0, 2**32 - 1),
        "ContentType": TEXT,
        "ResponseTopic": TEXT.filter(bool),
        "CorrelationData": st.binary(max_size=16),
        "TopicAlias": st.integers(1, 65535),
        "UserProperty": st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=3),
    },
)


def _packed(props: dict[str, object], packet_type: int = PacketTypes.PUBLISH) -> bytes:
    theirs = Properties(packet_type)
    for name, value in props.items():
        setattr(theirs, name, value)
    return bytes(theirs.pack())


def _publish(props: bytes, payload: bytes = b'{"req_id":"01"}') -> bytes:
    topic = b"oc/v1/pos-0001/up/tap"
    return struct.pack("!H", len(topic)) + topic + struct.pack("!H", 7) + props + payload


@given(PUBLISH_PROPERTIES, st.binary(max_size=8))
def test_unpacks_what_paho_unpacks(props: dict[str, object], tail: bytes) -> None:
    buffer = _packed(props) + tail
    theirs, their_len = Properties(PacketTypes.PUBLISH).unpack(buffer)
    ours, our_len = LeanProperties(PacketTypes.PUBLISH).unpack(buffer)
    assert our_len == their_len
    assert ours.json() == theirs.json()
    assert str(ours) == str(theirs)
    assert ours.pack() == theirs.pack()


def test_validates_and_packs_as_paho_does() -> None:
    ours = LeanProperties(PacketTypes.CONNECT)
    ours.SessionExpiryInterval = 3600
    ours.ReceiveMaximum = 100
    assert ours.pack() == _packed({"SessionExpiryInterval": 3600, "ReceiveMaximum": 100}, 1)
    with pytest.raises(Exception, match="range 1-65535"):
        ours.ReceiveMaximum = 0
    with pytest.raises(Exception, match="does not apply"):
        LeanProperties(PacketTypes.PUBACK).SessionExpiryInterval = 1
    assert LeanProperties(PacketTypes.PUBLISH).isEmpty()


def test_shares_one_copy_of_the_tables() -> None:
    a, b = LeanProperties(PacketTypes.PUBLISH), LeanProperties(PacketTypes.PUBACK)
    assert a.names is b.names
    assert a.properties is b.properties
    assert a.types is b.types
    assert a.names == Properties(PacketTypes.PUBLISH).names  # the tables paho builds


def test_reusing_an_object_clears_what_it_held() -> None:
    # The short cut for an empty property list applies only to an object that holds nothing.
    ours = LeanProperties(PacketTypes.PUBLISH)
    ours.unpack(_packed({"ContentType": "json"}))
    assert ours.json() == {"ContentType": "json"}
    _props, used = ours.unpack(b"\x00rest")
    assert used == 1
    assert ours.isEmpty()


def test_paho_decodes_with_them_once_in_use() -> None:
    assert use_lean_properties()
    assert use_lean_properties()  # twice: nothing changes
    # Why this module exists: if paho stops naming `Properties` here, the patch is lost.
    assert paho_packet.Properties is LeanProperties
    assert paho_client.Properties is LeanProperties
    plain = paho_packet.decode_publish(0x32, _publish(b"\x00"), V5)
    assert isinstance(plain.properties, LeanProperties)
    assert plain.properties.isEmpty()
    assert plain.payload == b'{"req_id":"01"}'
    assert plain.mid == 7
    carried = paho_packet.decode_publish(0x32, _publish(_packed({"ContentType": "a/b"})), V5)
    assert carried.properties is not None
    assert carried.properties.json() == {"ContentType": "a/b"}
    assert carried.payload == b'{"req_id":"01"}'
    ack = paho_packet.decode_puback(0x40, struct.pack("!H", 9), V5)
    assert ack.mid == 9
    assert isinstance(ack.properties, LeanProperties)
