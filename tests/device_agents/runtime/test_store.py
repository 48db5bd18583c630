"""The agent's store: seqs that survive crashes, acks that delete only what they cover, wipes
that start a new epoch, and config bundles applied atomically."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from onecard.device_agents.protocol.acks import compute_ack
from onecard.device_agents.protocol.bundles import make_bundle
from onecard.device_agents.runtime.configfiles import ConfigFiles
from onecard.device_agents.runtime.store import AgentStore, open_database


def open_store(path, device="pos-1", epoch="aaaa0001"):
    return AgentStore(open_database(path), device, new_epoch=epoch)


def tap(store, n=1):
    return [store.append_record({"device_time": 1_767_225_600_000 + i}) for i in range(n)]


def test_seqs_count_up_by_one_and_continue_after_reopening(tmp_path):
    store = open_store(tmp_path / "a.db")
    tap(store, 3)
    store.conn.close()

    again = open_store(tmp_path / "a.db", epoch="bbbb0002")

    assert again.epoch == "aaaa0001"
    assert [r.seq for r in tap(again, 2)] == [4, 5]


def test_an_ack_deletes_only_the_records_it_covers(tmp_path):
    store = open_store(tmp_path / "a.db")
    tap(store, 9)

    deleted = store.delete_covered(compute_ack(store.epoch, [1, 2, 3, 5, 8, 9]))

    assert deleted == 6
    assert [r.seq for r in store.records(after=0)] == [4, 6, 7]


def test_an_ack_for_another_epoch_deletes_nothing(tmp_path):
    store = open_store(tmp_path / "a.db")
    tap(store, 3)

    assert store.delete_covered(compute_ack("other-epoch", [1, 2, 3])) == 0
    assert store.unsent_count() == 3


def test_a_wiped_store_gets_a_new_epoch_and_starts_at_seq_one(tmp_path):
    store = open_store(tmp_path / "a.db")
    tap(store, 4)

    lost = store.wipe()
    fresh = AgentStore(store.conn, "pos-1", new_epoch="cccc0003")

    assert lost == 4
    assert fresh.epoch == "cccc0003"
    assert tap(fresh)[0].seq == 1


def test_devices_sharing_a_file_keep_their_own_seqs(tmp_path):
    conn = open_database(tmp_path / "fleet.db")
    a = AgentStore(conn, "pos-1", new_epoch="aaaa0001")
    b = AgentStore(conn, "pos-2", new_epoch="bbbb0002")

    tap(a, 3)
    tap(b, 1)

    assert (a.max_seq, b.max_seq, a.unsent_count(), b.unsent_count()) == (3, 1, 3, 1)


def test_a_process_killed_while_storing_leaves_contiguous_seqs(tmp_path):
    path = tmp_path / "crash.db"
    child = textwrap.dedent(
        f"""
        from onecard.device_agents.runtime.store import AgentStore, open_database
        store = AgentStore(open_database({str(path)!r}), "pos-1", new_epoch="aaaa0001")
        i = 0
        while True:
            store.append_record({{"device_time": 1_767_225_600_000 + i}})
            i += 1
            if i == 50:
                print("ready", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()

    store = open_store(path)
    seqs = [r.seq for r in store.records(after=0, limit=10**9)]

    assert len(seqs) >= 50
    assert seqs == list(range(1, store.max_seq + 1))
    assert tap(store)[0].seq == len(seqs) + 1


def test_list_deltas_and_snapshots_set_the_version_with_the_entries(tmp_path):
    store = open_store(tmp_path / "a.db")
    store.apply_delta("blacklist", 1, [5, 3], [])
    store.apply_delta("blacklist", 2, [9], [3])

    assert (store.list_keys("blacklist"), store.list_versions()) == ([5, 9], {"blacklist": 2})

    store.apply_delta("blacklist", 7, [1], [], replace=True)
    assert (store.list_keys("blacklist"), store.list_versions()) == ([1], {"blacklist": 7})


class PowerCut(Exception):
    pass


@pytest.mark.parametrize("step", ["write", "keep_previous", "switch"])
def test_a_power_cut_during_config_apply_leaves_the_old_or_the_new_bundle(tmp_path, step):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    old, new = (make_bundle("pos-1", v, {"v": v}, key) for v in (1, 2))
    ConfigFiles(tmp_path).apply(old)

    def cut(name):
        if name == step:
            raise PowerCut

    with pytest.raises(PowerCut):
        ConfigFiles(tmp_path, step=cut).apply(new)
    after = ConfigFiles(tmp_path)

    assert after.current() in (old, new)
    assert list(tmp_path.glob("*.tmp")) == []


def test_config_apply_keeps_the_previous_bundle_for_rollback(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    files = ConfigFiles(tmp_path)
    old, new = (make_bundle("pos-1", v, {"v": v}, key) for v in (1, 2))
    files.apply(old)
    files.apply(new)

    assert (files.current(), files.previous()) == (new, old)
    assert files.rollback() == old
    assert files.current() == old


def test_a_torn_current_file_reads_as_no_config(tmp_path):
    (tmp_path / "current.json").write_bytes(b'{"v":1,"device":"pos-1","vers')

    assert ConfigFiles(tmp_path).current() is None
