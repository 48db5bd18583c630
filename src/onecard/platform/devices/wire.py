"""The platform side of the MQTT payloads (PROTOCOL.md), decoded into frozen values.

Private stand-in until ``onecard.device_agents.protocol`` ships message codecs: everything that
knows a field name lives here, so switching to the shared codecs touches this file only.
Decoders raise :class:`BadMessage` with a short reason; the bridge counts and answers it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

VERSION = 1
PREFIX = "oc/v1/"
DEVICE_ID_RE = re.compile(r"^[a-z0-9-]{3,64}$")
MAX_PAYLOAD = 256 * 1024
MAX_BATCH = 1000
BLACKLIST = "card_blacklist"


class BadMessage(ValueError):
    """A payload that is not JSON, misses fields or has wrong types (``reason`` is short)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail[:300]


@dataclass(frozen=True)
class Topic:
    """A parsed topic ``oc/v1/{device}/{rest}``: ``rest`` is ``up/records``, ``state`` ..."""

    device_id: str
    rest: str


def parse_topic(topic: str) -> Topic | None:
    """The device and the rest of an ``oc/v1/`` topic; ``None`` for anything else."""
    if not topic.startswith(PREFIX):
        return None
    device, _, rest = topic[len(PREFIX) :].partition("/")
    if not DEVICE_ID_RE.match(device) or not rest:
        return None
    return Topic(device, rest)


def topic(device_id: str, rest: str) -> str:
    """``oc/v1/{device_id}/{rest}``."""
    return f"{PREFIX}{device_id}/{rest}"


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)
    v: int = Field(ge=1)


Seq = Field(ge=1, le=2**62)
M = TypeVar("M", bound=_Msg)
B = TypeVar("B", bound=BaseModel)


class Hello(_Msg):
    """``up/hello``: who the device is and what it holds."""

    kind: str = Field(max_length=40)
    firmware: str = Field(default="", max_length=64)
    epoch: int = Field(ge=0, le=2**62)
    seq: int = Field(default=0, ge=0, le=2**62)
    lists: dict[str, int] = Field(default_factory=dict)
    config_version: int = Field(default=0, ge=0)
    device_time: str = Field(default="", max_length=40)


class Credential(BaseModel):
    """What the reader read."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)
    type: str = Field(default="card_no", pattern=r"^(card_no|uid)$")
    value: str = Field(min_length=1, max_length=32)


class Tap(_Msg):
    """``up/tap``: an online authorisation request."""

    req_id: str = Field(min_length=1, max_length=64)
    credential: Credential
    amount_fen: int | None = Field(default=None, ge=0, le=100_000_000)
    direction: str | None = Field(default=None, max_length=10)
    device_time: str = Field(default="", max_length=40)


class Record(BaseModel):
    """One offline record inside ``up/records``."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)
    seq: int = Seq
    type: str = Field(min_length=1, max_length=40)
    card_no: str | None = Field(default=None, max_length=32)
    amount_fen: int | None = Field(default=None, ge=0, le=100_000_000)
    device_time: str = Field(max_length=40)
    clock_valid: bool = True


class Heartbeat(_Msg):
    """``up/heartbeat``: the device's own view of its health."""

    unsent: int = Field(ge=0)
    storage_used: int = Field(ge=0)
    storage_total: int = Field(ge=1)
    lists: dict[str, int] = Field(default_factory=dict)
    config_version: int = Field(default=0, ge=0)
    clock_offset_ms: int | None = None
    reader: str = Field(default="ok", max_length=40)


class TimeRequest(_Msg):
    """``up/time``: the device's send time ``t0`` (ms since the Unix epoch, device clock)."""

    t0: int


class Receipt(_Msg):
    """``up/receipt``: a command result, or an applied list or config version."""

    type: str = Field(pattern=r"^(command|list|config)$")
    cmd_id: str | None = Field(default=None, max_length=64)
    ok: bool = True
    result: dict[str, Any] = Field(default_factory=dict)
    list: str | None = Field(default=None, max_length=60)
    version: int | None = Field(default=None, ge=0)


@dataclass(frozen=True)
class RecordBatch:
    """``up/records`` after triage: valid records, and the malformed ones by seq if readable."""

    epoch: int
    records: tuple[Record, ...]
    malformed: tuple[tuple[int | None, str, dict[str, Any]], ...]


def loads(payload: bytes) -> dict[str, Any]:
    """JSON object of a payload, size-checked; :class:`BadMessage` otherwise."""
    if len(payload) > MAX_PAYLOAD:
        raise BadMessage("too-large", f"{len(payload)} bytes > {MAX_PAYLOAD}")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadMessage("not-json", str(exc)) from None
    if not isinstance(data, dict):
        raise BadMessage("not-object", type(data).__name__)
    return data


def decode(model: type[M], payload: bytes) -> M:
    """Decode ``payload`` into ``model``."""
    return parse(model, loads(payload))


def parse(model: type[B], data: dict[str, Any]) -> B:
    """Validate ``data`` as ``model``; :class:`BadMessage` names the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise BadMessage("invalid", f"{where}: {err['msg']}") from None


def decode_records(payload: bytes) -> RecordBatch:
    """Triage a records batch: one bad record never takes the valid ones with it."""
    data = loads(payload)
    epoch, items = data.get("epoch"), data.get("records")
    if type(epoch) is not int or epoch < 0 or not isinstance(items, list):
        raise BadMessage("invalid", "records batch needs an integer epoch and a records list")
    if len(items) > MAX_BATCH:
        raise BadMessage("too-large", f"{len(items)} records > {MAX_BATCH}")
    good: list[Record] = []
    bad: list[tuple[int | None, str, dict[str, Any]]] = []
    for item in items:
        raw = item if isinstance(item, dict) else {"value": item}
        try:
            good.append(parse(Record, raw))
        except BadMessage as exc:
            seq = raw.get("seq")
            ok_seq = type(seq) is int and 1 <= seq <= 2**62
            bad.append((seq if ok_seq else None, exc.detail, raw))
    return RecordBatch(epoch, tuple(good), tuple(bad))


def dumps(body: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON with ``v``."""
    return json.dumps({"v": VERSION, **body}, ensure_ascii=False, separators=(",", ":")).encode()
