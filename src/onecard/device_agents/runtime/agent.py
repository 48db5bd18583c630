"""The agent's protocol logic for one device, without sockets or threads of its own.

The transport calls `Agent.on_connect`, `on_disconnect`, `on_message` and, a few times a second,
`poll`; the agent answers through the ``publish`` function it was attached to. A reader calls
`present` (in the transport's thread). Time comes from the injected `DeviceClock` (device time)
and ``monotonic`` (timeouts), randomness from the injected ``rng``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from onecard.device_agents.protocol import codec
from onecard.device_agents.protocol.acks import to_ranges
from onecard.device_agents.protocol.blacklist import SortedKeySet, credential_key
from onecard.device_agents.protocol.codes import (
    CredentialKind,
    DeviceKind,
    Direction,
    ProtocolError,
    ReaderState,
    ReasonCode,
)
from onecard.device_agents.protocol.messages import (
    Ack,
    Credential,
    Heartbeat,
    Hello,
    Record,
    RecordsBatch,
    TapDecision,
    TapRequest,
    TimeRequest,
    TimeResponse,
)
from onecard.device_agents.protocol.timesync import CLOCK_FLOOR_MS, clock_valid, measure
from onecard.device_agents.protocol.topics import Topic, parse_topic, topic
from onecard.device_agents.runtime.clock import DeviceClock
from onecard.device_agents.runtime.configfiles import ConfigFiles
from onecard.device_agents.runtime.downlink import Downlink
from onecard.device_agents.runtime.offline import (
    OfflineContext,
    OfflinePolicy,
    OfflineRule,
    default_rule,
)
from onecard.device_agents.runtime.store import AgentStore

if TYPE_CHECKING:
    from onecard.device_agents.runtime.personality import Personality

log = logging.getLogger(__name__)
Publish = Callable[[str, bytes, int, bool], None]


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Identity and tuning of one agent (times in seconds)."""

    device_id: str
    kind: DeviceKind
    firmware: str = "oc-agent 0.1.0"
    batch_size: int = 100
    max_inflight: int = 4
    ack_timeout_s: float = 10.0
    tap_timeout_s: float = 1.5
    hello_ack_timeout_s: float = 3.0
    heartbeat_s: float = 60.0
    time_sync_s: float = 3600.0
    max_skew_ms: int = 300_000
    clock_floor_ms: int = CLOCK_FLOOR_MS
    blacklist: str = "blacklist"


@dataclass(slots=True)
class AgentCounters:
    """What an agent did; the simulator sums them to prove nothing was lost or duplicated."""

    records_created: int = 0
    records_sent: int = 0
    records_acked: int = 0
    records_resent: int = 0
    records_wiped: int = 0
    duplicates_sent: int = 0
    gone_declared: int = 0
    taps_online: int = 0
    taps_offline: int = 0
    late_decisions: int = 0
    lists_applied: int = 0
    list_gaps: int = 0
    configs_applied: int = 0
    configs_rejected: int = 0
    commands: int = 0
    errors_received: int = 0
    malformed_received: int = 0
    connects: int = 0
    time_syncs: int = 0
    clock_steps: int = 0


@dataclass(frozen=True, slots=True)
class Presented:
    """A credential event from a reader (``amount`` for a sale, ``direction`` for a gate)."""

    credential: Credential
    amount: int | None = None
    direction: Direction | None = None

    @classmethod
    def uid(cls, hex_uid: str, amount: int | None = None) -> Presented:
        """A card UID read by a reader."""
        return cls(Credential(kind=CredentialKind.UID, value=hex_uid.lower()), amount)


@dataclass(frozen=True, slots=True)
class LocalDecision:
    """What the terminal shows: the platform's decision, or its own when offline (``beep``:
    the pattern a personality chose, for the reader driver)."""

    allow: bool
    reason: ReasonCode
    online: bool
    display: str = ""
    balance: int | None = None
    detail: str | None = None
    flags: tuple[str, ...] = ()
    relay_ms: int | None = None
    seq: int | None = None
    beep: str | None = None


Done = Callable[[LocalDecision], None]


@dataclass(slots=True)
class Handlers:
    """What the device does beyond the protocol; each defaults to nothing."""

    open_door: Callable[[int], None] = lambda _ms: None
    reboot: Callable[[], None] = lambda: None
    decided: Callable[[LocalDecision], None] = lambda _d: None
    config_applied: Callable[[dict[str, object]], None] = lambda _body: None
    reader_state: Callable[[], ReaderState] = lambda: ReaderState.OK


@dataclass(slots=True)
class _Pending:
    deadline: float
    presented: Presented
    done: Done


@dataclass(slots=True)
class _Session:
    """Per-connection state; a new one on every connect."""

    uploading: bool = False
    hello_deadline: float = 0.0
    sent_upto: int = 0
    inflight: dict[int, float] = field(default_factory=dict)
    time_t0: int | None = None
    more: bool = True


class Agent:
    """One device's protocol state machine (see module docstring)."""

    def __init__(
        self,
        settings: AgentSettings,
        store: AgentStore,
        config: ConfigFiles,
        *,
        clock: DeviceClock,
        monotonic: Callable[[], float],
        rng: random.Random,
        public_key: Ed25519PublicKey | None = None,
        rule: OfflineRule = default_rule,
        handlers: Handlers | None = None,
        counters: AgentCounters | None = None,
        personality: Personality | None = None,
    ) -> None:
        self.settings = settings
        self.personality = personality  # before the downlink: it configures it from disk
        self.store = store
        self.clock = clock
        self.monotonic = monotonic
        self.rng = rng
        self.rule = rule
        self.handlers = handlers or Handlers()
        self.counters = counters or AgentCounters()
        self.online = False
        self.offset_ms: int | None = None
        self.rtt_ms: int | None = None
        self._publish: Publish = lambda _t, _p, _q, _r: None
        self._session = _Session()
        self._pending: dict[str, _Pending] = {}
        self._started = monotonic()
        self._next_heartbeat = self._started + settings.heartbeat_s
        self._next_sync = self._started
        self.downlink = Downlink(self, config, public_key)
        self.lists: dict[str, SortedKeySet] = {
            name: SortedKeySet(store.list_keys(name)) for name in store.list_versions()
        }

    # wiring -------------------------------------------------------------------------------

    def attach(self, publish: Publish) -> None:
        """Send through ``publish(topic, payload, qos, retain)`` from now on."""
        self._publish = publish

    def send(self, kind: Topic, message: object) -> None:
        """Encode and publish a message on this device's topic ``kind``."""
        assert hasattr(message, "model_dump_json")
        payload = codec.encode(message)  # type: ignore[arg-type]
        self._publish(topic(self.settings.device_id, kind), payload, kind.qos, kind.retained)

    @property
    def policy(self) -> OfflinePolicy:
        """Offline allowance from the config bundle in force."""
        return self.downlink.policy

    @property
    def clock_epoch(self) -> int:
        """Incremented each time the device clock is reset or stepped."""
        return int(self.store.get("clock_epoch", "0"))

    def clock_valid(self) -> bool:
        """X-R4 for the device's own clock now."""
        return clock_valid(
            self.clock.now_ms(),
            self.offset_ms,
            floor_ms=self.settings.clock_floor_ms,
            max_skew_ms=self.settings.max_skew_ms,
        )

    # session ------------------------------------------------------------------------------

    def on_connect(self) -> None:
        """The link is up: say hello, sync the clock, wait for the hello ack to upload."""
        self.online = True
        self.counters.connects += 1
        now = self.monotonic()
        self._session = _Session(hello_deadline=now + self.settings.hello_ack_timeout_s)
        self.send(Topic.HELLO, self._hello())
        self.sync_time()

    def on_disconnect(self) -> None:
        """The link is down: taps waiting for an answer are decided here and now."""
        self.online = False
        self._session = _Session()
        for req_id in list(self._pending):
            pending = self._pending.pop(req_id)
            self._decide_offline(pending.presented, pending.done, req_id)

    def drop_pending(self) -> None:
        """Forget taps waiting for an answer (the device lost power mid-tap)."""
        self._pending.clear()

    def _hello(self) -> Hello:
        return Hello(
            kind=self.settings.kind,
            firmware=self.settings.firmware,
            epoch=self.store.epoch,
            max_seq=self.store.max_seq,
            unsent=self.store.unsent_count(),
            lists=self.store.list_versions(),
            config_version=self.downlink.config_version,
            device_time=self.clock.now_ms(),
            clock_valid=self.clock_valid(),
            clock_epoch=self.clock_epoch,
        )

    def on_message(self, name: str, payload: bytes) -> None:
        """A message arrived on ``name``; malformed ones are counted and logged, never raised.

        An empty payload (a retained message being cleared) is ignored."""
        if not payload:
            return
        try:
            device, kind = parse_topic(name)
            if device != self.settings.device_id or kind.upward:
                return
            message = codec.decode(kind, payload)
        except ProtocolError as err:
            self.counters.malformed_received += 1
            log.warning("%s: refused %s: %s", self.settings.device_id, name, err)
            return
        if isinstance(message, TapDecision):
            self._on_decision(message)
        elif isinstance(message, Ack):
            self._on_ack(message)
        elif isinstance(message, TimeResponse):
            self._on_time(message)
        else:
            self.downlink.handle(message)

    def poll(self) -> None:
        """Timeouts and periodic work; call a few times a second."""
        now = self.monotonic()
        for req_id, pending in list(self._pending.items()):
            if now >= pending.deadline:
                del self._pending[req_id]
                self._decide_offline(pending.presented, pending.done, req_id)
        if not self.online:
            return
        session = self._session
        if not session.uploading and now >= session.hello_deadline:
            session.uploading = session.more = True
        if any(now >= deadline for deadline in session.inflight.values()):
            session.inflight.clear()
            session.sent_upto = 0
            session.more = True
        self.pump()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.settings.heartbeat_s
            self.send(Topic.HEARTBEAT, self.heartbeat())
        if now >= self._next_sync:
            self.sync_time()

    # taps ---------------------------------------------------------------------------------

    def present(self, presented: Presented, done: Done | None = None) -> None:
        """A credential was read: ask the platform, or decide offline."""

        def finish(decision: LocalDecision) -> None:
            self.handlers.decided(decision)
            if done is not None:
                done(decision)

        req_id = f"{self.rng.getrandbits(64):016x}"
        if not self.online:
            self._decide_offline(presented, finish, None)
            return
        deadline = self.monotonic() + self.settings.tap_timeout_s
        self._pending[req_id] = _Pending(deadline, presented, finish)
        self.send(
            Topic.TAP,
            TapRequest(
                req_id=req_id,
                credential=presented.credential,
                amount=presented.amount,
                direction=presented.direction,
                device_time=self.clock.now_ms(),
                clock_valid=self.clock_valid(),
            ),
        )

    def _on_decision(self, decision: TapDecision) -> None:
        pending = self._pending.pop(decision.req_id, None)
        if pending is None:
            self.counters.late_decisions += 1
            return
        self.counters.taps_online += 1
        shown = LocalDecision(
            allow=decision.allow,
            reason=decision.reason,
            online=True,
            display=decision.display,
            balance=decision.balance,
            detail=decision.detail,
            flags=decision.flags,
            relay_ms=decision.relay_ms,
        )
        if self.personality is not None:
            shown = self.personality.online(shown, pending.presented)
        pending.done(shown)

    def blacklisted(self, credential: Credential) -> bool:
        """Whether the blacklist this device holds names ``credential``."""
        held = self.lists.get(self.settings.blacklist)
        return held is not None and credential_key(credential.kind, credential.value) in held

    def _decide_offline(self, presented: Presented, done: Done, req_id: str | None) -> None:
        if self.personality is not None:
            self.counters.taps_offline += 1
            done(self.personality.offline(self, presented, req_id))
            return
        cred = presented.credential
        key = credential_key(cred.kind, cred.value)
        now = self.clock.now_ms()
        valid = self.clock_valid()
        ctx = OfflineContext(
            key=key,
            blacklisted=self.blacklisted(cred),
            amount=presented.amount,
            spent_today=self.store.spent(key, now // 86_400_000),
            clock_valid=valid,
            policy=self.policy,
        )
        verdict = self.rule(ctx)
        record = self.store_record(
            device_time=now,
            clock_valid=valid,
            credential=cred,
            allow=verdict.allow,
            reason=verdict.reason,
            amount=presented.amount if verdict.allow else None,
            direction=presented.direction,
            flags=verdict.flags,
            req_id=req_id,
            spend_key=key if verdict.allow else None,
        )
        self.counters.taps_offline += 1
        flags = verdict.flags
        done(LocalDecision(verdict.allow, verdict.reason, False, flags=flags, seq=record.seq))

    def store_record(
        self,
        *,
        spend_key: int | None = None,
        seal: Callable[[int], Mapping[str, Any]] | None = None,
        state: Mapping[str, str] | None = None,
        **fields: object,
    ) -> Record:
        """Store a record (seq allocated in the same transaction) and upload it if online;
        ``seal`` and ``state`` as in `AgentStore.append_record`."""
        fields.setdefault("clock_epoch", self.clock_epoch)
        fields.setdefault("list_versions", self.store.list_versions())
        record = self.store.append_record(dict(fields), spend_key=spend_key, seal=seal, state=state)
        self.counters.records_created += 1
        self._session.more = True
        self.pump()
        return record

    # records ------------------------------------------------------------------------------

    def pump(self) -> None:
        """Upload stored records not yet sent in this session, keeping a few batches in flight."""
        session = self._session
        if not (self.online and session.uploading and session.more):
            return
        while len(session.inflight) < self.settings.max_inflight:
            batch = self.store.records(after=session.sent_upto, limit=self.settings.batch_size)
            if not batch:
                session.more = False
                return
            self._send_records(batch)
            session.sent_upto = batch[-1].seq
            session.inflight[batch[-1].seq] = self.monotonic() + self.settings.ack_timeout_s

    def _send_records(self, records: list[Record], gone: tuple[tuple[int, int], ...] = ()) -> None:
        self.counters.records_sent += len(records)
        self.send(
            Topic.RECORDS, RecordsBatch(epoch=self.store.epoch, records=tuple(records), gone=gone)
        )

    def _on_ack(self, ack: Ack) -> None:
        session = self._session
        if ack.epoch != self.store.epoch:
            if ack.missing:  # an old epoch's records are gone with the old store
                self.counters.gone_declared += sum(b - a + 1 for a, b in ack.missing)
                self.send(Topic.RECORDS, RecordsBatch(epoch=ack.epoch, gone=ack.missing))
            return
        self.counters.records_acked += self.store.delete_covered(ack)
        for last in [s for s in session.inflight if s <= ack.upper]:
            del session.inflight[last]
        if ack.missing:
            self._resend(ack.missing)
        session.uploading = True
        session.more = True
        self.pump()

    def _resend(self, missing: tuple[tuple[int, int], ...]) -> None:
        held = self.store.records_in(missing)
        have = {r.seq for r in held}
        wanted = {s for a, b in missing for s in range(a, min(b, a + 10_000) + 1)}
        gone = tuple(to_ranges(s for s in wanted if s not in have and s <= self.store.max_seq))
        self.counters.records_resent += len(held)
        self.counters.gone_declared += sum(b - a + 1 for a, b in gone)
        step = self.settings.batch_size
        for i in range(0, max(len(held), 1), step):
            chunk = held[i : i + step]
            if chunk or gone:
                self._send_records(chunk, gone if i == 0 else ())

    def resend_all(self) -> None:
        """Send every unacknowledged record again (command ``resend_records``)."""
        self._session.sent_upto = 0
        self._session.inflight.clear()
        self._session.more = True
        self.pump()

    # clock and health ---------------------------------------------------------------------

    def sync_time(self) -> None:
        """Ask the platform for its time (answered on ``down/time``)."""
        if not self.online:
            return
        t0 = self.clock.now_ms()
        self._session.time_t0 = t0
        self._next_sync = self.monotonic() + self.settings.time_sync_s
        self.send(Topic.TIME_REQUEST, TimeRequest(t0=t0))

    def _on_time(self, answer: TimeResponse) -> None:
        if answer.t0 != self._session.time_t0:
            return
        self._session.time_t0 = None
        sample = measure(answer.t0, answer.t1, answer.t2, self.clock.now_ms())
        self.counters.time_syncs += 1
        self.rtt_ms = sample.rtt_ms
        if abs(sample.offset_ms) > self.settings.max_skew_ms or not self.clock_valid():
            self.clock.step(sample.offset_ms)
            self.bump_clock_epoch()
            self.counters.clock_steps += 1
            self.offset_ms = 0
        else:
            self.offset_ms = sample.offset_ms

    def bump_clock_epoch(self) -> None:
        """The device clock was reset or stepped: records from now on carry a new clock epoch."""
        self.store.put("clock_epoch", str(self.clock_epoch + 1))

    def heartbeat(self) -> Heartbeat:
        """The heartbeat as of now."""
        return Heartbeat(
            device_time=self.clock.now_ms(),
            epoch=self.store.epoch,
            max_seq=self.store.max_seq,
            unsent=self.store.unsent_count(),
            storage_used=self.store.storage_used(),
            lists=self.store.list_versions(),
            config_version=self.downlink.config_version,
            clock_offset_ms=self.offset_ms,
            rtt_ms=self.rtt_ms,
            clock_valid=self.clock_valid(),
            reader=self.handlers.reader_state(),
            uptime_s=int(self.monotonic() - self._started),
        )
