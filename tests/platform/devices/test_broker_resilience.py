"""Real ACL, a SIGKILLed bridge process, a restarted broker, and a device written by nobody here
(mosquitto_pub/mosquitto_sub)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onecard.device_agents.protocol.asyncapi import validate_message
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices.models import DeviceRecord
from onecard.platform.devices.services import get_device

WAIT = 45.0
SECRET = "test-secret-key-0123456789abcdef"


EPOCH = "ep-0001"
DEVICE_TIME = 1_788_220_800_000


def rec(seq: int, epoch: str = EPOCH) -> dict[str, Any]:
    return {"epoch": epoch, "seq": seq, "event": "door_open", "device_time": DEVICE_TIME}


def seqs(sf: sessionmaker[Session], tenant_id: int, device_id: str) -> list[int]:
    with sf() as s, tenant_scope(tenant_id):
        pk = get_device(s, device_id).id
        return list(
            s.scalars(
                select(DeviceRecord.seq)
                .where(DeviceRecord.device_pk == pk)
                .order_by(DeviceRecord.seq)
            )
        )


def wait_until(cond: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_a_device_cannot_publish_as_another_or_read_its_downlink(
    tls_broker: Any, fleet: Any, start_bridge: Any, session_factory: Any
) -> None:
    f = fleet(tls_broker, 2)
    start_bridge(tls_broker, group=f"g{uuid.uuid4().hex[:8]}")
    a_id, b_id = sorted(f.passwords)
    a, b = f.connect(a_id), f.connect(b_id)
    b.online()
    a.online()
    a.c.subscribe(f"oc/v1/{b_id}/down/#", qos=1)  # SUBACK says granted; delivery is what counts
    info = a.c.publish(
        f"oc/v1/{b_id}/up/records",
        json.dumps({"v": 1, "epoch": EPOCH, "records": [rec(1)]}).encode(),
        qos=1,
    )
    info.wait_for_publish(WAIT)
    b.send("up/records", {"epoch": EPOCH, "records": [rec(1), rec(2)]})
    assert b.expect("down/ack")["acked_upto"] == 2
    a.send("up/time", {"t0": 1})
    a.expect("down/time")  # a's own traffic still flows; everything of b's was dropped
    assert seqs(session_factory, f.tenant.id, b_id) == [1, 2]
    leaked = [m for m in list(a.inbox.queue) if m[0] == "down/ack" and m[1]["acked_upto"] == 2]
    assert leaked == []


def _bridge_process(
    broker: Any, database_url: str, client_id: str, group: str, cwd: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ONECARD_DATABASE__URL": database_url,
        "ONECARD_MQTT__EMBEDDED": "false",
        "ONECARD_MQTT__HOST": broker.host,
        "ONECARD_MQTT__PORT": str(broker.port),
        "ONECARD_MQTT__USERNAME": broker.platform_user,
        "ONECARD_MQTT__PASSWORD": broker.platform_password,
        "ONECARD_SECURITY__SECRET_KEY": SECRET,
    }
    env.pop("ONECARD_CONFIG", None)
    cmd = [
        sys.executable,
        "-m",
        "onecard.platform.devices.cli",
        "bridge",
        "--client-id",
        client_id,
        "--share-group",
        group,
    ]
    if broker.tls_ca:
        cmd += ["--tls-ca", broker.tls_ca]
    with open(cwd / f"{client_id}.log", "ab") as log:
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log)


def _until_served(dev: Any, hello: dict[str, Any]) -> None:
    """Say hello until the freshly started bridge process has subscribed and answers."""
    deadline = time.monotonic() + 60
    while True:
        dev.send("up/hello", hello)
        try:
            dev.expect("down/ack", timeout=1.0)
            return
        except AssertionError:
            assert time.monotonic() < deadline, "bridge process never answered"


def test_sigkilled_bridge_process_loses_and_duplicates_nothing(
    broker: Any, fleet: Any, session_factory: Any, database_url: str, tmp_path: Path
) -> None:
    f = fleet(broker, 1)
    client_id, group = f"bp-{uuid.uuid4().hex[:8]}", f"g{uuid.uuid4().hex[:8]}"
    proc = _bridge_process(broker, database_url, client_id, group, tmp_path)
    try:
        dev = f.connect(next(iter(f.passwords)))
        dev.send("state", b"online", retain=True)
        hello = {
            "kind": "pos",
            "firmware": "t",
            "epoch": "ep-0007",
            "max_seq": 0,
            "unsent": 200,
            "device_time": DEVICE_TIME,
        }
        _until_served(dev, hello)
        batches = [
            {
                "epoch": "ep-0007",
                "records": [rec(s, "ep-0007") for s in range(n * 10 + 1, n * 10 + 11)],
            }
            for n in range(20)
        ]
        for batch in batches[:10]:
            dev.c.publish(
                f"oc/v1/{dev.device_id}/up/records", json.dumps({"v": 1, **batch}).encode(), qos=1
            )
        dev.expect("down/ack", lambda b: b["acked_upto"] >= 10)
        proc.send_signal(signal.SIGKILL)  # mid-ingest
        proc.wait(10)
        for batch in batches[10:]:
            dev.c.publish(
                f"oc/v1/{dev.device_id}/up/records", json.dumps({"v": 1, **batch}).encode(), qos=1
            )
        proc = _bridge_process(broker, database_url, client_id, group, tmp_path)
        for batch in batches:  # the device resends everything not yet acknowledged
            dev.send("up/records", batch)
        dev.expect("down/ack", lambda b: b["acked_upto"] == 200, timeout=60)
        assert seqs(session_factory, f.tenant.id, dev.device_id) == list(range(1, 201))
    finally:
        proc.terminate()
        proc.wait(10)


def test_restarting_the_broker_loses_and_duplicates_nothing(
    tls_broker: Any, fleet: Any, start_bridge: Any, session_factory: Any
) -> None:
    f = fleet(tls_broker, 1)
    start_bridge(tls_broker, group=f"g{uuid.uuid4().hex[:8]}")
    dev = f.connect(next(iter(f.passwords)))
    dev.online()
    dev.send("up/records", {"epoch": EPOCH, "records": [rec(1), rec(2)]})
    dev.expect("down/ack", lambda b: b["acked_upto"] == 2)
    tls_broker.embedded.stop()
    tls_broker.embedded.start()
    wait_until(lambda: dev.c.is_connected())
    dev.subscribed.clear()
    dev.subscribed.wait(WAIT)
    for _ in range(2):
        dev.send("up/records", {"epoch": EPOCH, "records": [rec(2), rec(3)]})
    dev.expect("down/ack", lambda b: b["acked_upto"] == 3, timeout=40)
    assert seqs(session_factory, f.tenant.id, dev.device_id) == [1, 2, 3]


def test_mosquitto_clients_as_a_device_hello_records_and_ack(
    broker: Any, fleet: Any, start_bridge: Any, session_factory: Any
) -> None:
    f = fleet(broker, 1)
    start_bridge(broker, group=f"g{uuid.uuid4().hex[:8]}")
    dev_id, pw = next(iter(f.passwords.items()))
    base = ["-h", broker.host, "-p", str(broker.port), "-V", "mqttv5"]
    creds = ["-u", dev_id, "-P", pw] if broker.acl else []
    if broker.tls_ca:
        creds += ["--cafile", broker.tls_ca]
    sub_cmd = ["stdbuf", "-oL", "mosquitto_sub", *base, *creds, "-i", f"{dev_id}-sub", "-W", "90"]
    sub = subprocess.Popen(
        [*sub_cmd, "-t", f"oc/v1/{dev_id}/down/#", "-q", "1", "-v", "-d"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sub.stdout is not None
        for line in sub.stdout:
            if "SUBACK" in line:
                break
        pub = ["mosquitto_pub", *base, *creds, "-i", f"{dev_id}-pub", "-q", "1"]
        # Only what docs/asyncapi.yaml says: each payload is checked against the document.
        hello = {
            "v": 1,
            "kind": "door",
            "firmware": "x",
            "epoch": "ep-0003",
            "max_seq": 2,
            "unsent": 2,
            "device_time": DEVICE_TIME,
        }
        batch = {"v": 1, "epoch": "ep-0003", "records": [rec(1, "ep-0003"), rec(2, "ep-0003")]}
        for suffix, body in (("up/hello", hello), ("up/records", batch)):
            validate_message(f"oc/v1/{dev_id}/{suffix}", body)
            subprocess.run(
                [*pub, "-t", f"oc/v1/{dev_id}/{suffix}", "-m", json.dumps(body)],
                check=True,
                timeout=WAIT,
                capture_output=True,
            )
        acks = []
        for line in sub.stdout:
            if line.startswith(f"oc/v1/{dev_id}/down/ack "):
                payload = line.split(" ", 1)[1].strip()
                validate_message(f"oc/v1/{dev_id}/down/ack", payload)
                acks.append(json.loads(payload))
                if acks[-1]["acked_upto"] == 2:
                    break
        first, last = acks[0], acks[-1]
        assert (first["epoch"], first["acked_upto"], first["highest"]) == ("ep-0003", 0, 0)
        assert (last["epoch"], last["acked_upto"], last["highest"], last["missing"]) == (
            "ep-0003",
            2,
            2,
            [],
        )
    finally:
        sub.terminate()
        sub.wait(10)
        if sub.stdout is not None:
            sub.stdout.close()
