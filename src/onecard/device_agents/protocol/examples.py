"""One or more example of every message, for the AsyncAPI document, docs and tests."""

from __future__ import annotations

from pydantic import BaseModel

from onecard.device_agents.protocol.codes import (
    CommandName,
    CredentialKind,
    DeviceKind,
    Direction,
    ReasonCode,
)
from onecard.device_agents.protocol.messages import (
    Ack,
    Command,
    CommandReceipt,
    ConfigBundle,
    ConfigReceipt,
    Credential,
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
from onecard.device_agents.protocol.topics import Topic

T = 1_767_225_600_000  # 2026-01-01T00:00:00Z
EPOCH = "7f3a9c2e5b1d4086"
CARD = Credential(kind=CredentialKind.UID, value="04a1b2c3")


def example_messages() -> dict[Topic, list[BaseModel]]:
    """Examples per topic; every one is valid."""
    return {
        Topic.STATE: [State(state="online"), State(state="offline")],
        Topic.HELLO: [
            Hello(
                kind=DeviceKind.POS,
                firmware="oc-agent 0.1.0",
                epoch=EPOCH,
                max_seq=41,
                unsent=2,
                lists={"blacklist": 1207},
                config_version=3,
                device_time=T,
            )
        ],
        Topic.TAP: [
            TapRequest(req_id="pos-17-000123", credential=CARD, amount=1250, device_time=T),
            TapRequest(
                req_id="d-1", credential=CARD, direction=Direction.IN, reader="1", device_time=T
            ),
        ],
        Topic.DECISION: [
            TapDecision(
                req_id="pos-17-000123",
                allow=True,
                reason=ReasonCode.OK,
                display="扣款 12.50 余额 87.50",
                balance=8750,
                postings=(PostingSummary(account="purse", amount=-1250),),
            ),
            TapDecision(
                req_id="d-1", allow=False, reason=ReasonCode.ANTI_PASSBACK, detail="apb_violation"
            ),
        ],
        Topic.RECORDS: [
            RecordsBatch(
                epoch=EPOCH,
                records=(
                    Record(
                        epoch=EPOCH,
                        seq=40,
                        device_time=T,
                        credential=CARD,
                        allow=True,
                        reason=ReasonCode.OK,
                        amount=1250,
                        list_versions={"blacklist": 1207},
                        flags=("offline",),
                    ),
                    Record(epoch=EPOCH, seq=41, event="door_forced", device_time=T + 5000),
                ),
                gone=((12, 13),),
            )
        ],
        Topic.ACK: [Ack(epoch=EPOCH, acked_upto=39, highest=41, missing=((40, 40),))],
        Topic.HEARTBEAT: [
            Heartbeat(
                device_time=T,
                epoch=EPOCH,
                max_seq=41,
                unsent=0,
                storage_used=81920,
                lists={"blacklist": 1207},
                config_version=3,
                clock_offset_ms=-420,
                rtt_ms=3,
                uptime_s=86400,
            )
        ],
        Topic.TIME_REQUEST: [TimeRequest(t0=T)],
        Topic.TIME_RESPONSE: [TimeResponse(t0=T, t1=T + 350, t2=T + 351)],
        Topic.LISTS: [
            ListDelta(list="blacklist", from_=1207, to=1208, add=(77_900_291,), remove=()),
            ListSnapshotChunk(
                list="blacklist",
                version=1208,
                index=0,
                count=1,
                total_sha256="1b5c9e7e3b1d8e0d6e0b5b0f3f4c9b1c2a7e9d2f3b4c5d6e7f8091a2b3c4d5e6",
                data="eNpjZGBgAAAADgAD",
            ),
        ],
        Topic.CONFIG: [
            ConfigBundle(
                device="pos-17",
                version=4,
                sha256="44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                body='{"mode":"canteen"}',
                signature="A" * 86 + "==",
                key_id="tenant-1/2026",
            )
        ],
        Topic.COMMAND: [
            Command(cmd_id="c-991", name=CommandName.OPEN_DOOR, args={"ms": 3000}),
            Command(
                cmd_id="e-1",
                name=CommandName.ERROR,
                args={"topic": "up/tap", "reason": "malformed_json"},
            ),
        ],
        Topic.RECEIPT: [
            CommandReceipt(cmd_id="c-991", status="ok"),
            ListReceipt(list="blacklist", version=1208, status="applied"),
            ConfigReceipt(version=4, status="rejected", detail="bad_signature"),
        ],
    }
