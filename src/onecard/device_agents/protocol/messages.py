"""Message models of the device protocol: one frozen pydantic model per topic (PROTOCOL.md).

Conventions every model follows (and the AsyncAPI document states):
- ``v`` (int ≥ 1) is required in every payload: the minor protocol version. Receivers ignore
  fields they don't know and refuse payloads that lack a required field or carry a wrong type
  (no coercion: ``"5"`` is not an integer, ``1`` is not a boolean).
- Times are integers: milliseconds since 1970-01-01T00:00:00Z. ``device_time`` is the device's
  own clock as it read it (possibly wrong); the platform keeps it beside its corrected time.
- Money is integer fen. Sequence numbers start at 1 within an epoch.
- A seq range is a two-element array ``[first, last]``, both inclusive.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from onecard.device_agents.protocol.codes import (
    ALLOW_REASONS,
    CommandName,
    CredentialKind,
    DeviceKind,
    Direction,
    ReaderState,
    ReasonCode,
)

PROTOCOL_VERSION: Final = 1
MAX_SAFE_INT: Final = 2**53 - 1
MAX_RECORDS_PER_BATCH: Final = 500
MAX_DELTA_ENTRIES: Final = 20_000
MAX_CONFIG_BODY: Final = 256 * 1024
MAX_CHUNK_DATA: Final = 192 * 1024

Millis = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]
Seq = Annotated[int, Field(ge=1, le=MAX_SAFE_INT)]
Fen = Annotated[int, Field(ge=-MAX_SAFE_INT, le=MAX_SAFE_INT)]
Version = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]
ListKey = Annotated[int, Field(ge=0, le=2**63 - 1)]
Epoch = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{4,64}$")]
RequestId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
ListName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
Flag = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
ShortText = Annotated[str, StringConstraints(max_length=256)]
Hex = Annotated[str, StringConstraints(pattern=r"^([0-9a-fA-F]{2}){1,512}$")]
Extra = dict[Annotated[str, StringConstraints(max_length=64)], str | int | bool | None]


def _check_range(value: tuple[int, int]) -> tuple[int, int]:
    if not 1 <= value[0] <= value[1] <= MAX_SAFE_INT:
        raise ValueError("a seq range is [first, last] with 1 <= first <= last")
    return value


SeqRange = Annotated[
    tuple[int, int],
    AfterValidator(_check_range),
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "integer", "minimum": 1, "maximum": MAX_SAFE_INT},
            "minItems": 2,
            "maxItems": 2,
            "description": "[first, last] seq, both inclusive, first <= last",
        }
    ),
]


class Message(BaseModel):
    """Base of every payload: frozen, unknown fields ignored, no type coercion."""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        strict=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    v: int = Field(default=PROTOCOL_VERSION, ge=1, le=65535, description="protocol minor version")


_UID = CredentialKind.UID
_HEX = re.compile(r"[0-9A-Fa-f]+").fullmatch


class Credential(BaseModel):
    """What was presented. ``uid`` is hex (4, 7 or 10 bytes); other kinds are text."""

    model_config = Message.model_config

    kind: CredentialKind
    value: Annotated[str, StringConstraints(min_length=1, max_length=256)]

    @model_validator(mode="after")
    def _uid_is_hex(self) -> Credential:
        # Module-level names: this runs for every record of every upload, and an enum member
        # lookup is a descriptor call on Python 3.11; int(v, 16) would also take "12_34".
        if self.kind is _UID and (len(self.value) not in (8, 14, 20) or not _HEX(self.value)):
            raise ValueError("a uid is 4, 7 or 10 bytes of hex")
        return self


class State(Message):
    """``state`` (retained, QoS 0): ``online`` on connect; the last will publishes ``offline``."""

    state: Literal["online", "offline"]


class Hello(Message):
    """``up/hello`` after each connect. The platform answers with pending list deltas, then an
    ``ack`` for ``epoch`` (the device starts uploading records when that ack arrives)."""

    kind: DeviceKind
    firmware: Annotated[str, StringConstraints(max_length=64)]
    epoch: Epoch
    max_seq: Count = Field(description="highest seq stored in this epoch (0: none yet)")
    unsent: Count
    lists: dict[ListName, Version] = Field(default_factory=dict)
    config_version: Version = 0
    device_time: Millis
    clock_valid: bool = True
    clock_epoch: Count = 0


class TapRequest(Message):
    """``up/tap``: ask the platform to decide. Answered on ``down/tap`` with the same req_id."""

    req_id: RequestId
    credential: Credential
    amount: Annotated[int, Field(ge=0, le=MAX_SAFE_INT)] | None = None
    direction: Direction | None = None
    reader: ShortText | None = None
    device_time: Millis
    clock_valid: bool = True
    extra: Extra = Field(default_factory=dict)


class PostingSummary(BaseModel):
    """One line of what the platform posted for a tap (for a receipt printer or display)."""

    model_config = Message.model_config

    account: ShortText
    amount: Fen


class TapDecision(Message):
    """``down/tap``: the platform's decision. ``allow`` with ``OK``/``PENDING`` only."""

    req_id: RequestId
    allow: bool
    reason: ReasonCode
    detail: Flag | None = Field(default=None, description="module reason, e.g. apb_violation")
    display: Annotated[str, StringConstraints(max_length=64)] = ""
    balance: Fen | None = None
    postings: tuple[PostingSummary, ...] = Field(default=(), max_length=16)
    flags: tuple[Flag, ...] = Field(default=(), max_length=16)
    relay_ms: Annotated[int, Field(ge=0, le=60_000)] | None = None

    @model_validator(mode="after")
    def _reason_matches(self) -> TapDecision:
        if self.allow != (self.reason in ALLOW_REASONS):
            raise ValueError("allow=true needs reason OK or PENDING; a denial any other reason")
        return self


class Record(BaseModel):
    """A fact the device decided alone (or an event) and stored under ``(epoch, seq)``.

    ``req_id`` is set when an online request timed out and the device decided offline, so the
    platform can match a decision it made but the device never received.
    """

    model_config = Message.model_config

    epoch: Epoch
    seq: Seq
    event: Flag = "tap"
    device_time: Millis
    clock_valid: bool = True
    clock_epoch: Count = 0
    credential: Credential | None = None
    allow: bool | None = None
    reason: ReasonCode | None = None
    detail: Flag | None = None
    amount: Fen | None = None
    direction: Direction | None = None
    flags: tuple[Flag, ...] = Field(default=(), max_length=16)
    list_versions: dict[ListName, Version] = Field(default_factory=dict)
    req_id: RequestId | None = None
    clearing: Hex | None = Field(default=None, description="epurse.md §12 clearing record, hex")
    extra: Extra = Field(default_factory=dict)


class RecordsBatch(Message):
    """``up/records``: records of one epoch in seq order, plus ranges the device no longer has
    (``gone``: its answer to ``missing`` it cannot resend)."""

    epoch: Epoch
    records: tuple[Record, ...] = Field(default=(), max_length=MAX_RECORDS_PER_BATCH)
    gone: tuple[SeqRange, ...] = Field(default=(), max_length=1000)


class RejectedRecord(BaseModel):
    """A record the platform could not store as valid; it is still covered by the ack."""

    model_config = Message.model_config

    seq: Seq
    reason: Flag


class Ack(Message):
    """``down/ack``: what the platform holds of ``epoch``.

    Covered (the device may delete): every ``seq <= acked_upto``, and every seq in
    ``(acked_upto, highest]`` that lies in no ``missing`` range (without ``highest``: only
    ``seq <= acked_upto``). ``missing`` lists the gaps the device should resend (or declare
    ``gone``).
    """

    epoch: Epoch
    acked_upto: Count
    highest: Count | None = Field(
        default=None, description="highest seq held (>= acked_upto); absent: acked_upto"
    )
    missing: tuple[SeqRange, ...] = Field(default=(), max_length=1000)
    rejected: tuple[RejectedRecord, ...] = Field(default=(), max_length=MAX_RECORDS_PER_BATCH)

    @property
    def upper(self) -> int:
        """The highest seq this ack speaks for (``highest``, or ``acked_upto`` without it)."""
        return self.acked_upto if self.highest is None else self.highest

    @model_validator(mode="after")
    def _ranges_inside(self) -> Ack:
        if self.upper < self.acked_upto:
            raise ValueError("highest >= acked_upto")
        for first, last in self.missing:
            if first <= self.acked_upto or (self.highest is not None and last > self.highest):
                raise ValueError("missing ranges lie in (acked_upto, highest]")
        return self


class Heartbeat(Message):
    """``up/heartbeat``: the device's health and what it holds."""

    device_time: Millis
    epoch: Epoch
    max_seq: Count
    unsent: Count
    storage_used: Count = Field(description="bytes")
    storage_free: Count | None = None
    lists: dict[ListName, Version] = Field(default_factory=dict)
    config_version: Version = 0
    clock_offset_ms: Annotated[int, Field(ge=-MAX_SAFE_INT, le=MAX_SAFE_INT)] | None = None
    rtt_ms: Count | None = None
    clock_valid: bool = True
    reader: ReaderState = ReaderState.OK
    uptime_s: Count = 0


class TimeRequest(Message):
    """``up/time``: ``t0`` is the device clock when sent."""

    t0: Millis


class TimeResponse(Message):
    """``down/time``: ``t0`` echoed, ``t1`` server receive time, ``t2`` server send time."""

    t0: Millis
    t1: Millis
    t2: Millis


class ListDelta(Message):
    """``down/lists`` delta: apply when the device holds ``from`` or a later version below
    ``to`` (``add``/``remove`` give the final state of every key changed after ``from``); it
    then holds ``to``."""

    kind: Literal["delta"] = "delta"
    list: ListName
    from_: Version = Field(alias="from")
    to: Version
    add: tuple[ListKey, ...] = Field(default=(), max_length=MAX_DELTA_ENTRIES)
    remove: tuple[ListKey, ...] = Field(default=(), max_length=MAX_DELTA_ENTRIES)

    @model_validator(mode="after")
    def _forward(self) -> ListDelta:
        if self.to <= self.from_:
            raise ValueError("a delta goes forward: to > from")
        return self


class ListSnapshotChunk(Message):
    """``down/lists`` snapshot part ``index`` of ``count``: the chunks' ``data`` (base64)
    concatenated is the `blacklist` ``zdv1`` encoding of the whole list at ``version``."""

    kind: Literal["snapshot"] = "snapshot"
    list: ListName
    version: Version
    index: Annotated[int, Field(ge=0, le=9999)]
    count: Annotated[int, Field(ge=1, le=10000)]
    encoding: Literal["zdv1"] = "zdv1"
    total_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    data: Annotated[str, StringConstraints(max_length=MAX_CHUNK_DATA * 4 // 3 + 4)]

    @model_validator(mode="after")
    def _index_inside(self) -> ListSnapshotChunk:
        if self.index >= self.count:
            raise ValueError("index < count")
        return self


ListUpdate = Annotated[ListDelta | ListSnapshotChunk, Field(discriminator="kind")]


class ConfigBundle(Message):
    """``down/config`` (retained): ``body`` is the JSON text of the configuration; ``sha256`` its
    UTF-8 hash (hex); ``signature`` the base64 Ed25519 signature of
    ``"oc-config/v1|{device}|{version}|{sha256}"`` by the tenant's key (see `bundles`)."""

    device: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{3,64}$")]
    version: Annotated[int, Field(ge=1, le=MAX_SAFE_INT)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    body: Annotated[str, StringConstraints(max_length=MAX_CONFIG_BODY)]
    signature: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{86}==$")]
    key_id: ShortText | None = None


class Command(Message):
    """``down/cmd``. Idempotent by ``cmd_id``: a repeat gets the first receipt again.
    ``error`` (args ``topic``, ``reason``, optional ``req_id``) answers a refused message."""

    cmd_id: RequestId
    name: CommandName
    args: Extra = Field(default_factory=dict)
    expires_at: Millis | None = Field(default=None, description="server time")


class CommandReceipt(Message):
    """``up/receipt`` for a command."""

    kind: Literal["cmd"] = "cmd"
    cmd_id: RequestId
    status: Literal["ok", "failed", "unsupported", "expired"]
    detail: ShortText | None = None


class ListReceipt(Message):
    """``up/receipt`` for a list: ``applied`` (now holds ``version``), or ``gap`` (holds
    ``version``, could not apply what came: send the deltas from there or a snapshot)."""

    kind: Literal["list"] = "list"
    list: ListName
    version: Version
    status: Literal["applied", "gap", "error"]
    detail: ShortText | None = None


class ConfigReceipt(Message):
    """``up/receipt`` for a configuration bundle; ``detail`` says why one was rejected."""

    kind: Literal["config"] = "config"
    version: Version
    status: Literal["applied", "rejected", "rolled_back"]
    detail: ShortText | None = None


Receipt = Annotated[CommandReceipt | ListReceipt | ConfigReceipt, Field(discriminator="kind")]

AnyMessage = (
    State
    | Hello
    | TapRequest
    | TapDecision
    | RecordsBatch
    | Ack
    | Heartbeat
    | TimeRequest
    | TimeResponse
    | ListDelta
    | ListSnapshotChunk
    | ConfigBundle
    | Command
    | CommandReceipt
    | ListReceipt
    | ConfigReceipt
)


def model_fields_of(message: BaseModel) -> dict[str, Any]:
    """The message as a JSON-ready dict, wire names, ``None`` fields left out."""
    return message.model_dump(mode="json", by_alias=True, exclude_none=True)
