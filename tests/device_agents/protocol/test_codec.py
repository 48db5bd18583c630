"""Encoding and decoding protocol payloads: round trips, and what is refused and why."""

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onecard.device_agents.protocol.codec import (
    decode,
    decode_records,
    decode_topic,
    encode,
    max_payload,
    topic_for,
)
from onecard.device_agents.protocol.codes import CredentialKind, ErrorReason, ProtocolError
from onecard.device_agents.protocol.examples import example_messages
from onecard.device_agents.protocol.messages import (
    Credential,
    ListDelta,
    Record,
    RecordsBatch,
    TapRequest,
)
from onecard.device_agents.protocol.topics import Topic, topic

EXAMPLES = [(kind, m) for kind, ms in example_messages().items() for m in ms]


@pytest.mark.parametrize(("kind", "message"), EXAMPLES, ids=lambda x: str(x)[:30])
def test_every_example_round_trips(kind, message):
    assert topic_for(message) is kind
    assert decode(kind, encode(message)) == message


def test_unknown_fields_are_ignored():
    message = decode(Topic.TIME_REQUEST, b'{"v":1,"t0":5,"future":{"x":1}}')

    assert message.t0 == 5


def test_a_newer_minor_version_is_accepted():
    assert decode(Topic.TIME_REQUEST, b'{"v":7,"t0":5}').v == 7


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{", ErrorReason.MALFORMED_JSON),
        (b"\xff\xfe", ErrorReason.MALFORMED_JSON),
        (b"[1]", ErrorReason.NOT_AN_OBJECT),
        (b'{"t0":5}', ErrorReason.MISSING_FIELD),
        (b'{"v":1}', ErrorReason.MISSING_FIELD),
        (b'{"v":0,"t0":5}', ErrorReason.UNSUPPORTED_VERSION),
        (b'{"v":1,"t0":"5"}', ErrorReason.BAD_TYPE),
        (b'{"v":1,"t0":5.0}', ErrorReason.BAD_TYPE),
        (b'{"v":true,"t0":5}', ErrorReason.BAD_TYPE),
        (b'{"v":1,"t0":-1}', ErrorReason.BAD_VALUE),
    ],
)
def test_a_bad_payload_is_refused_with_its_reason(payload, reason):
    with pytest.raises(ProtocolError) as caught:
        decode(Topic.TIME_REQUEST, payload)

    assert caught.value.reason is reason


def test_a_payload_over_the_topic_limit_is_refused_before_parsing():
    big = b'{"v":1,"t0":5,"pad":"' + b"x" * max_payload(Topic.TIME_REQUEST) + b'"}'

    with pytest.raises(ProtocolError) as caught:
        decode(Topic.TIME_REQUEST, big)

    assert caught.value.reason is ErrorReason.TOO_LARGE


def test_encode_refuses_a_message_over_the_limit():
    keys = tuple(range(10**12, 10**12 + 20_000))
    with pytest.raises(ProtocolError) as caught:
        encode(ListDelta(list="blacklist", from_=1, to=2, add=keys, remove=keys))

    assert caught.value.reason is ErrorReason.TOO_LARGE


def test_a_delta_uses_from_on_the_wire():
    wire = json.loads(encode(ListDelta(list="blacklist", from_=3, to=4, add=(9,))))

    assert wire["from"] == 3
    assert "from_" not in wire


def test_a_decision_allowing_with_a_denial_reason_is_refused():
    payload = b'{"v":1,"req_id":"r","allow":true,"reason":"CARD_LOST"}'

    with pytest.raises(ProtocolError) as caught:
        decode(Topic.DECISION, payload)

    assert caught.value.reason is ErrorReason.BAD_VALUE


def test_an_unknown_reason_code_is_refused():
    with pytest.raises(ProtocolError):
        decode(Topic.DECISION, b'{"v":1,"req_id":"r","allow":false,"reason":"NOPE"}')


def test_a_receipt_without_kind_is_refused():
    with pytest.raises(ProtocolError) as caught:
        decode(Topic.RECEIPT, b'{"v":1,"cmd_id":"c","status":"ok"}')

    assert caught.value.reason is ErrorReason.MISSING_FIELD


def test_decode_topic_names_the_device():
    device, kind, message = decode_topic(topic("pos-1", Topic.TIME_REQUEST), b'{"v":1,"t0":1}')

    assert (device, kind, message.t0) == ("pos-1", Topic.TIME_REQUEST, 1)


def test_one_malformed_record_does_not_cost_the_others():
    good = {"epoch": "abcd", "seq": 1, "device_time": 5}
    batch = {
        "v": 1,
        "epoch": "abcd",
        "records": [good, {**good, "seq": "2"}, {**good, "seq": 3, "epoch": "zzzz"}, 7, good],
    }

    decoded = decode_records(json.dumps(batch))

    assert [r.seq for r in decoded.records] == [1, 1]
    assert sorted(e.index for e in decoded.rejected) == [1, 2, 3]
    assert {e.seq for e in decoded.rejected} == {None, 3}


def test_a_batch_with_a_bad_envelope_is_refused_whole():
    with pytest.raises(ProtocolError):
        decode_records(b'{"v":1,"records":[]}')


def test_a_uid_credential_must_be_hex_of_a_real_uid_length():
    with pytest.raises(ValueError, match="uid"):
        Credential(kind=CredentialKind.UID, value="abc")


texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
flags = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
records = st.builds(
    Record,
    epoch=st.just("abcd"),
    seq=st.integers(1, 2**53 - 1),
    device_time=st.integers(0, 2**53 - 1),
    amount=st.none() | st.integers(-(2**53) + 1, 2**53 - 1),
    flags=st.lists(flags, max_size=3).map(tuple),
    extra=st.dictionaries(
        st.text(max_size=8), st.none() | st.booleans() | st.integers(-5, 5) | texts, max_size=3
    ),
)


@given(st.lists(records, max_size=5))
def test_any_records_batch_round_trips(items):
    batch = RecordsBatch(epoch="abcd", records=tuple(items))

    assert decode(Topic.RECORDS, encode(batch)) == batch
    assert decode_records(encode(batch)).records == batch.records


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_decoder(data):
    for kind in Topic:
        with contextlib.suppress(ProtocolError):
            decode(kind, data)


@given(st.dictionaries(st.text(max_size=10), st.none() | st.integers() | texts, max_size=6))
def test_arbitrary_objects_are_either_valid_taps_or_refused(obj):
    outcome: object
    try:
        outcome = decode(Topic.TAP, json.dumps({"v": 1, **obj}))
    except ProtocolError as err:
        outcome = err.reason
    assert isinstance(outcome, TapRequest) or outcome in set(ErrorReason)
