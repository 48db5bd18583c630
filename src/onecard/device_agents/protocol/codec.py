"""Encode and decode protocol payloads with validation.

`decode` refuses, with a `ProtocolError` and a closed reason, anything that breaks the contract:
over the topic's size limit, not JSON, not an object, no ``v``, a missing required field, a wrong
type or value. Unknown fields are ignored. `decode_records` decodes a batch record by record, so
one malformed record never costs the valid ones beside it (PROTOCOL "Errors").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, TypeAdapter, ValidationError

from onecard.device_agents.protocol.codes import ErrorReason, ProtocolError
from onecard.device_agents.protocol.messages import (
    Ack,
    AnyMessage,
    Command,
    ConfigBundle,
    Heartbeat,
    Hello,
    ListUpdate,
    Receipt,
    Record,
    RecordsBatch,
    State,
    TapDecision,
    TapRequest,
    TimeRequest,
    TimeResponse,
)
from onecard.device_agents.protocol.topics import Topic, parse_topic

DEFAULT_MAX_PAYLOAD: Final = 16 * 1024
MAX_PAYLOAD: Final[dict[Topic, int]] = {
    Topic.RECORDS: 512 * 1024,
    Topic.LISTS: 320 * 1024,
    Topic.CONFIG: 400 * 1024,
}

MODEL_FOR_TOPIC: Final[dict[Topic, Any]] = {
    Topic.STATE: State,
    Topic.HELLO: Hello,
    Topic.TAP: TapRequest,
    Topic.DECISION: TapDecision,
    Topic.RECORDS: RecordsBatch,
    Topic.ACK: Ack,
    Topic.HEARTBEAT: Heartbeat,
    Topic.TIME_REQUEST: TimeRequest,
    Topic.TIME_RESPONSE: TimeResponse,
    Topic.LISTS: ListUpdate,
    Topic.CONFIG: ConfigBundle,
    Topic.COMMAND: Command,
    Topic.RECEIPT: Receipt,
}
"""The payload type of each topic: a model class, or an annotated union (lists, receipts)."""

_ADAPTERS: Final[dict[Topic, TypeAdapter[Any]]] = {
    t: TypeAdapter(m) for t, m in MODEL_FOR_TOPIC.items()
}
_RECORD: Final = TypeAdapter(Record)


def max_payload(kind: Topic) -> int:
    """Largest payload (bytes) accepted on ``kind``."""
    return MAX_PAYLOAD.get(kind, DEFAULT_MAX_PAYLOAD)


def topic_for(message: BaseModel) -> Topic:
    """The topic a message travels on (receipts and list updates share one topic each)."""
    for kind, model in MODEL_FOR_TOPIC.items():
        if isinstance(model, type) and isinstance(message, model):
            return kind
    name = type(message).__name__
    if name in ("CommandReceipt", "ListReceipt", "ConfigReceipt"):
        return Topic.RECEIPT
    if name in ("ListDelta", "ListSnapshotChunk"):
        return Topic.LISTS
    raise TypeError(f"{name} is not a protocol message")


def encode(message: BaseModel) -> bytes:
    """Compact UTF-8 JSON, ``None`` fields left out; `ProtocolError` if over the size limit."""
    data = message.model_dump_json(exclude_none=True, by_alias=True).encode()
    limit = max_payload(topic_for(message))
    if len(data) > limit:
        raise ProtocolError(ErrorReason.TOO_LARGE, f"{len(data)} > {limit} bytes")
    return data


def decode(kind: Topic, payload: bytes | str) -> AnyMessage:
    """Validate ``payload`` as the message of topic ``kind``; `ProtocolError` if it isn't one."""
    data = payload.encode() if isinstance(payload, str) else payload
    if len(data) > max_payload(kind):
        raise ProtocolError(ErrorReason.TOO_LARGE, f"{len(data)} > {max_payload(kind)} bytes")
    try:
        message: AnyMessage = _ADAPTERS[kind].validate_json(data)
    except ValidationError as err:
        raise _protocol_error(err) from None
    if "v" not in message.model_fields_set:
        raise ProtocolError(ErrorReason.MISSING_FIELD, "v")
    return message


def decode_topic(name: str, payload: bytes | str) -> tuple[str, Topic, AnyMessage]:
    """Parse the topic and decode the payload: ``(device_id, topic kind, message)``."""
    device_id, kind = parse_topic(name)
    return device_id, kind, decode(kind, payload)


@dataclass(frozen=True, slots=True)
class RejectedEntry:
    """One record of a batch that failed validation: its position and what could be read."""

    index: int
    seq: int | None
    reason: ErrorReason
    detail: str


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """A records batch decoded record by record."""

    epoch: str
    records: tuple[Record, ...]
    gone: tuple[tuple[int, int], ...]
    rejected: tuple[RejectedEntry, ...]


def decode_records(payload: bytes | str) -> DecodedBatch:
    """Decode ``up/records`` keeping every valid record even if others are malformed.

    The envelope (``v``, ``epoch``, ``gone``) must be valid or the whole batch is refused with a
    `ProtocolError`. A record that is invalid or names another epoch goes to ``rejected``.
    """
    try:
        batch = decode(Topic.RECORDS, payload)
        assert isinstance(batch, RecordsBatch)
        return _split_epochs(batch.epoch, list(enumerate(batch.records)), batch.gone, [])
    except ProtocolError as err:
        if err.reason is ErrorReason.TOO_LARGE:
            raise
    raw = _loads_object(payload)
    envelope = decode(Topic.RECORDS, json.dumps({**raw, "records": []}))
    assert isinstance(envelope, RecordsBatch)
    items = raw.get("records")
    if not isinstance(items, list):
        raise ProtocolError(ErrorReason.BAD_TYPE, "records: not an array")
    good: list[tuple[int, Record]] = []
    bad: list[RejectedEntry] = []
    for index, item in enumerate(items):
        try:
            good.append((index, _RECORD.validate_json(json.dumps(item))))
        except ValidationError as err:
            e = _protocol_error(err)
            seq = item.get("seq") if isinstance(item, dict) else None
            seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
            bad.append(RejectedEntry(index, seq, e.reason, e.detail))
    return _split_epochs(envelope.epoch, good, envelope.gone, bad)


def _split_epochs(
    epoch: str,
    records: list[tuple[int, Record]],
    gone: tuple[tuple[int, int], ...],
    bad: list[RejectedEntry],
) -> DecodedBatch:
    good = [r for _, r in records if r.epoch == epoch]
    for index, r in records:
        if r.epoch != epoch:
            bad.append(RejectedEntry(index, r.seq, ErrorReason.BAD_VALUE, "epoch differs"))
    return DecodedBatch(epoch, tuple(good), gone, tuple(bad))


def _loads_object(payload: bytes | str) -> dict[str, Any]:
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as err:
        raise ProtocolError(ErrorReason.MALFORMED_JSON, str(err)[:200]) from None
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorReason.NOT_AN_OBJECT, type(raw).__name__)
    return raw


def _protocol_error(err: ValidationError) -> ProtocolError:
    first = err.errors(include_url=False, include_input=False)[0]
    kind, loc = first["type"], first["loc"]
    where = ".".join(str(part) for part in loc)
    detail = f"{where}: {first['msg']}"[:200]
    if kind == "json_invalid":
        return ProtocolError(ErrorReason.MALFORMED_JSON, detail)
    if not loc and kind in ("model_type", "model_attributes_type", "dict_type"):
        return ProtocolError(ErrorReason.NOT_AN_OBJECT, detail)
    if kind in ("missing", "union_tag_not_found"):
        return ProtocolError(ErrorReason.MISSING_FIELD, detail)
    if kind.endswith("_type"):
        return ProtocolError(ErrorReason.BAD_TYPE, detail)
    if loc == ("v",) or (len(loc) == 2 and loc[1] == "v"):
        return ProtocolError(ErrorReason.UNSUPPORTED_VERSION, detail)
    return ProtocolError(ErrorReason.BAD_VALUE, detail)
