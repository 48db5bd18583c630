"""The agent against a real broker (private mosquitto) and the platform double."""

from __future__ import annotations

import time

from onecard.device_agents.protocol.blacklist import snapshot_chunks
from onecard.device_agents.protocol.bundles import make_bundle
from onecard.device_agents.protocol.codes import CommandName, ReasonCode
from onecard.device_agents.protocol.messages import (
    Command,
    CommandReceipt,
    ConfigReceipt,
    ListDelta,
    ListReceipt,
    TapDecision,
)
from onecard.device_agents.runtime.agent import Handlers, Presented
from onecard.device_agents.runtime.clock import DeviceClock

CARD = Presented.uid("04a1b2c3", amount=1200)
LOST = 0x0BADCAFE


def test_agent_is_online_after_connect_and_its_last_will_says_offline(platform, make_agent):
    host = make_agent("door-1")
    assert platform.wait_until(lambda: platform.states.get("door-1") == "online")

    host.loop.call(host.link.go_offline)

    assert platform.wait_until(lambda: platform.states.get("door-1") == "offline")


def test_online_tap_shows_the_platform_decision(platform, make_agent):
    platform.decide = lambda _d, r: TapDecision(
        req_id=r.req_id, allow=True, reason=ReasonCode.OK, display="余额 88.00", balance=8800
    )
    host = make_agent()

    decision = host.tap(CARD)

    assert (decision.online, decision.allow, decision.balance) == (True, True, 8800)
    assert platform.count("pos-1") == 0


def test_unanswered_tap_is_decided_offline_and_uploaded_with_its_request_id(platform, make_agent):
    platform.decide = None
    host = make_agent()

    decision = host.tap(CARD)

    assert (decision.online, decision.allow, decision.seq) == (False, True, 1)
    assert platform.wait_until(lambda: platform.count("pos-1") == 1)
    (record,) = platform.records_of("pos-1")
    (request,) = platform.of_kind("pos-1", "up/tap")
    assert record.req_id == request.req_id
    assert "offline" in record.flags


def test_records_stored_offline_are_uploaded_exactly_once_after_reconnect(platform, make_agent):
    host = make_agent(batch_size=7)
    host.loop.call(host.link.go_offline)
    decisions = [host.tap(Presented.uid(f"{0x10000000 + i:08x}", amount=100)) for i in range(25)]

    host.loop.call(host.link.go_online)

    assert all(not d.online for d in decisions)
    assert platform.wait_until(lambda: platform.count("pos-1") == 25)
    assert platform.wait_until(lambda: host.agent.store.unsent_count() == 0)
    assert sorted(r.seq for r in platform.records_of("pos-1")) == list(range(1, 26))
    assert host.agent.counters.records_acked == 25


def test_a_blacklisted_card_is_denied_offline_after_the_delta(platform, make_agent):
    host = make_agent()
    platform.send("pos-1", platform.add_list_version("blacklist", (LOST,)))
    assert platform.wait_until(
        lambda: any(r.version == 1 for r in platform.of_kind("pos-1", "up/receipt"))
    )
    host.loop.call(host.link.go_offline)

    denied = host.tap(Presented.uid(f"{LOST:08x}", amount=100))
    allowed = host.tap(CARD)

    assert (denied.allow, denied.reason) == (False, ReasonCode.CARD_LOST)
    assert allowed.allow


def test_a_delta_that_skips_a_version_gets_a_gap_receipt(platform, make_agent):
    make_agent()

    platform.send("pos-1", ListDelta(list="blacklist", from_=4, to=5, add=(1,)))

    assert platform.wait_until(lambda: platform.of_kind("pos-1", "up/receipt"))
    (receipt,) = platform.of_kind("pos-1", "up/receipt")
    assert (receipt.status, receipt.version) == ("gap", 0)


def test_a_delta_from_an_older_base_is_applied_over_a_later_version(platform, make_agent):
    """Card 1 lost at v1 and found again at v2, card 2 lost at v2: the platform computed 0→2
    before the receipt of 0→1 arrived. The net change of every key since v0 gives v2 again."""
    host = make_agent()
    platform.send("pos-1", ListDelta(list="blacklist", from_=0, to=1, add=(1,)))
    assert platform.wait_until(lambda: len(platform.of_kind("pos-1", "up/receipt")) == 1)

    platform.send("pos-1", ListDelta(list="blacklist", from_=0, to=2, add=(2,), remove=(1,)))

    assert platform.wait_until(lambda: len(platform.of_kind("pos-1", "up/receipt")) == 2)
    receipt = platform.of_kind("pos-1", "up/receipt")[-1]
    assert (receipt.status, receipt.version) == ("applied", 2)
    held = host.loop.call(lambda: host.agent.lists["blacklist"])
    assert (1 in held, 2 in held) == (False, True)


def test_a_chunked_snapshot_replaces_the_list(platform, make_agent):
    host = make_agent()
    keys = set(range(1000, 60000, 3))

    for chunk in snapshot_chunks("blacklist", 9, keys, chunk_bytes=4096):
        platform.send("pos-1", chunk)

    assert platform.wait_until(lambda: platform.of_kind("pos-1", "up/receipt"))
    assert platform.of_kind("pos-1", "up/receipt")[0].version == 9
    assert list(host.agent.lists["blacklist"]) == sorted(keys)
    assert host.agent.store.list_versions() == {"blacklist": 9}


def test_pending_deltas_are_applied_before_records_are_uploaded(platform, make_agent, tmp_path):
    host = make_agent()
    host.loop.call(host.link.go_offline)
    host.tap(CARD)
    platform.add_list_version("blacklist", (LOST,))
    platform.add_list_version("blacklist", (LOST + 1,))

    host.loop.call(host.link.go_online)

    assert platform.wait_until(lambda: platform.count("pos-1") == 1)
    kinds = [k for d, k, _ in platform.events if d == "pos-1" and k != "state"]
    last_receipt = max(i for i, k in enumerate(kinds) if k == "up/receipt")
    assert last_receipt < kinds.index("up/records")
    assert host.agent.store.list_versions() == {"blacklist": 2}


def test_records_the_platform_lost_are_resent_on_missing(platform, make_agent):
    host = make_agent(batch_size=5, max_inflight=4)
    host.loop.call(host.link.go_offline)
    for i in range(12):
        host.tap(Presented.uid(f"{0x20000000 + i:08x}", amount=10))
    platform.drop_records = 1

    host.loop.call(host.link.go_online)

    assert platform.wait_until(lambda: platform.count("pos-1") == 12)
    assert host.agent.counters.records_resent >= 5
    assert platform.wait_until(lambda: host.agent.store.unsent_count() == 0)


def test_a_clock_reset_to_1970_is_stepped_by_sync_and_starts_a_clock_epoch(platform, make_agent):
    clock = DeviceClock()
    clock.reset_to(5_000)
    platform.answer_time = False
    host = make_agent(clock=clock)
    host.loop.call(host.link.go_offline)
    early = host.tap(CARD)
    assert not host.agent.clock_valid()

    platform.answer_time = True
    host.loop.call(host.link.go_online)

    assert platform.wait_until(lambda: host.agent.counters.clock_steps == 1)
    assert host.agent.clock_valid()
    assert abs(clock.now_ms() - time.time() * 1000) < 5_000
    assert "time_untrusted" in early.flags
    hello = platform.of_kind("pos-1", "up/hello")[-1]
    assert not hello.clock_valid
    assert host.agent.clock_epoch == 1


def test_clock_sync_measures_a_small_offset_without_stepping(platform, make_agent):
    platform.clock_offset_ms = 1500
    host = make_agent()

    assert platform.wait_until(lambda: host.agent.offset_ms is not None)
    assert 1300 <= host.agent.offset_ms <= 1700
    assert host.agent.counters.clock_steps == 0


def test_a_signed_config_is_applied_and_a_tampered_one_refused(platform, make_agent, tenant_key):
    host = make_agent()
    good = make_bundle("pos-1", 2, {"offline": {"max_amount": 300}}, tenant_key)
    platform.send("pos-1", good)
    assert platform.wait_until(lambda: platform.of_kind("pos-1", "up/receipt"))
    bad = make_bundle("pos-1", 3, {"offline": {"max_amount": 999999}}, tenant_key)
    platform.send("pos-1", bad.model_copy(update={"body": '{"offline":{"max_amount":1}}'}))
    assert platform.wait_until(lambda: len(platform.of_kind("pos-1", "up/receipt")) == 2)

    receipts = [r for r in platform.of_kind("pos-1", "up/receipt") if isinstance(r, ConfigReceipt)]
    assert [(r.version, r.status) for r in receipts] == [(2, "applied"), (3, "rejected")]
    assert receipts[1].detail == "bad_hash"
    assert host.agent.downlink.config_version == 2
    host.loop.call(host.link.go_offline)
    assert host.tap(Presented.uid("04a1b2c3", amount=301)).reason == ReasonCode.LIMIT_REACHED


def test_a_repeated_command_runs_once_and_gets_the_same_receipt(platform, make_agent):
    opened: list[int] = []
    make_agent(handlers=Handlers(open_door=opened.append))
    command = Command(cmd_id="c-1", name=CommandName.OPEN_DOOR, args={"ms": 2500})

    platform.send("pos-1", command)
    platform.send("pos-1", command)

    def receipts():
        return [r for r in platform.of_kind("pos-1", "up/receipt") if isinstance(r, CommandReceipt)]

    assert platform.wait_until(lambda: len(receipts()) == 2)
    first, second = receipts()
    assert first == second
    assert first.status == "ok"
    assert opened == [2500]


def test_heartbeats_report_unsent_records_and_list_versions(platform, make_agent):
    platform.decide = None
    platform.drop_records = 10**6
    host = make_agent(heartbeat_s=0.2)
    host.tap(CARD)
    platform.send("pos-1", platform.add_list_version("blacklist", (LOST,)))

    assert platform.wait_until(
        lambda: (
            (hb := platform.heartbeats.get("pos-1")) is not None
            and hb.unsent == 1
            and hb.lists == {"blacklist": 1}
        )
    )
    assert platform.heartbeats["pos-1"].epoch == host.agent.store.epoch


def test_agent_reconnects_after_a_broker_restart_and_uploads(platform, broker, make_agent):
    host = make_agent()
    host.link.backoff_base = 0.05

    broker.restart()
    host.tap(CARD)

    assert platform.wait_until(lambda: platform.count("pos-1") >= 1, timeout=15)
    assert host.agent.counters.connects >= 2


def test_list_receipts_name_the_version_now_held(platform, make_agent):
    make_agent()
    platform.send("pos-1", platform.add_list_version("blacklist", (1, 2)))
    platform.send("pos-1", platform.add_list_version("blacklist", (3,), (1,)))

    assert platform.wait_until(lambda: len(platform.of_kind("pos-1", "up/receipt")) == 2)
    receipts = platform.of_kind("pos-1", "up/receipt")
    assert all(isinstance(r, ListReceipt) and r.status == "applied" for r in receipts)
    assert [r.version for r in receipts] == [1, 2]
