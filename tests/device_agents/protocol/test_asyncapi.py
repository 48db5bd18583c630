"""The AsyncAPI document: generated from the models, committed, and checking every message."""

from pathlib import Path

import pytest

from onecard.device_agents.protocol.asyncapi import (
    asyncapi_document,
    asyncapi_yaml,
    validate_message,
)
from onecard.device_agents.protocol.codec import encode
from onecard.device_agents.protocol.codes import ErrorReason, ProtocolError
from onecard.device_agents.protocol.examples import example_messages
from onecard.device_agents.protocol.topics import Topic, topic

COMMITTED = Path(__file__).parents[3] / "docs" / "asyncapi.yaml"
EXAMPLES = [(kind, m) for kind, ms in example_messages().items() for m in ms]


def test_committed_document_equals_the_generated_one():
    assert COMMITTED.read_text(encoding="utf-8") == asyncapi_yaml(), (
        "regenerate: python -m onecard.device_agents.protocol.asyncapi > docs/asyncapi.yaml"
    )


def test_document_has_a_channel_and_operation_per_topic():
    doc = asyncapi_document()

    assert doc["asyncapi"] == "3.0.0"
    assert {c["address"] for c in doc["channels"].values()} == {
        f"oc/v1/{{dev}}/{t.value}" for t in Topic
    }
    actions = {op["channel"]["$ref"]: op["action"] for op in doc["operations"].values()}
    assert len(actions) == len(Topic)
    assert sorted(actions.values()).count("send") == sum(t.upward for t in Topic)


def test_every_message_schema_requires_v():
    schemas = asyncapi_document()["components"]["schemas"]

    for name in ("State", "Hello", "TapRequest", "Ack", "ListDelta", "CommandReceipt"):
        assert "v" in schemas[name]["required"], name


@pytest.mark.parametrize(("kind", "message"), EXAMPLES, ids=lambda x: str(x)[:30])
def test_every_example_message_validates_against_the_document(kind, message):
    validate_message(topic("dev-1", kind), encode(message))


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        (Topic.TIME_REQUEST, b'{"t0":1}'),
        (Topic.TIME_REQUEST, b'{"v":1,"t0":"1"}'),
        (Topic.DECISION, b'{"v":1,"req_id":"r","allow":false,"reason":"NOPE"}'),
        (Topic.RECEIPT, b'{"v":1,"kind":"cmd","status":"ok"}'),
        (Topic.ACK, b'{"v":1,"epoch":"abcd","acked_upto":1,"highest":2,"missing":[[1]]}'),
    ],
)
def test_document_refuses_what_the_decoder_refuses(kind, payload):
    with pytest.raises(ProtocolError) as caught:
        validate_message(topic("dev-1", kind), payload)

    assert caught.value.reason is ErrorReason.BAD_VALUE


def test_validate_message_refuses_a_foreign_topic():
    with pytest.raises(ProtocolError):
        validate_message("oc/v1/dev-1/up/nope", b"{}")
