"""The platform's view of the MQTT payloads: a thin adapter over the shared protocol.

Every shape (field names, types, limits) is `onecard.device_agents.protocol`'s; this module only
turns its `ProtocolError` into :class:`BadMessage` (what the bridge counts and answers) and
re-exports what the platform's device code uses, so that code has one import place.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

from onecard.device_agents.protocol import codec
from onecard.device_agents.protocol.codec import DecodedBatch, RejectedEntry
from onecard.device_agents.protocol.codes import ErrorReason, ProtocolError
from onecard.device_agents.protocol.messages import (
    Ack,
    AnyMessage,
    Command,
    CommandReceipt,
    ConfigBundle,
    ConfigReceipt,
    Heartbeat,
    Hello,
    ListDelta,
    ListReceipt,
    ListSnapshotChunk,
    PostingSummary,
    Record,
    RecordsBatch,
    State,
    TapDecision,
    TapRequest,
    TimeRequest,
    TimeResponse,
)
from onecard.device_agents.protocol.topics import Topic, parse_topic, topic

BLACKLIST = "blacklist"
"""The card blacklist's list name on the wire (what devices hold and report)."""

__all__ = [
    "BLACKLIST",
    "Ack",
    "AnyMessage",
    "BadMessage",
    "Command",
    "CommandReceipt",
    "ConfigBundle",
    "ConfigReceipt",
    "DecodedBatch",
    "Heartbeat",
    "Hello",
    "ListDelta",
    "ListReceipt",
    "ListSnapshotChunk",
    "PostingSummary",
    "Record",
    "RecordsBatch",
    "RejectedEntry",
    "State",
    "TapDecision",
    "TapRequest",
    "TimeRequest",
    "TimeResponse",
    "Topic",
    "decode",
    "decode_records",
    "encode",
    "parse",
    "reference",
    "topic",
]


class BadMessage(ValueError):
    """A payload or topic the protocol refuses; ``reason`` is an `ErrorReason` value."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail[:300]

    @classmethod
    def of(cls, err: ProtocolError) -> BadMessage:
        """The bridge's form of a protocol error."""
        return cls(err.reason.value, err.detail)


def parse(name: str) -> tuple[str, Topic]:
    """``(device id, Topic)`` of a received topic; :class:`BadMessage` if it isn't ours."""
    try:
        return parse_topic(name)
    except ProtocolError as err:
        raise BadMessage.of(err) from None


def decode(kind: Topic, payload: bytes) -> AnyMessage:
    """The message of topic ``kind``; :class:`BadMessage` if it breaks the contract."""
    try:
        return codec.decode(kind, payload)
    except ProtocolError as err:
        raise BadMessage.of(err) from None


def decode_records(payload: bytes) -> DecodedBatch:
    """An ``up/records`` batch record by record (one bad record keeps the good ones)."""
    try:
        return codec.decode_records(payload)
    except ProtocolError as err:
        raise BadMessage.of(err) from None


def encode(message: BaseModel) -> bytes:
    """Compact JSON of a protocol message (size-checked)."""
    return codec.encode(message)


def topic_for(message: BaseModel) -> Topic:
    """The topic a message travels on."""
    return codec.topic_for(message)


def reference(payload: bytes) -> dict[str, Any]:
    """``req_id`` of a refused payload when readable, so the device can match the error."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    req_id = data.get("req_id")
    if isinstance(req_id, str) and _REQ_ID.fullmatch(req_id):
        return {"req_id": req_id}
    return {}


UNKNOWN_TOPIC = ErrorReason.BAD_TOPIC.value
_REQ_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
