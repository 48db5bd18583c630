"""REST API of devices: register, read, change, rotate, health, commands, tasks, receipts."""

from __future__ import annotations

import uuid
from typing import Any


def _dev() -> str:
    return f"api-{uuid.uuid4().hex[:10]}"


def test_device_is_registered_read_changed_and_rotated(api: Any) -> None:
    dev = _dev()
    r = api.post("/api/v1/devices", json={"device_id": dev, "kind": "pos", "name": "Till 1"})
    assert r.status_code == 201, r.get_json()
    first = r.get_json()["mqtt"]["password"]
    assert api.get(f"/api/v1/devices/{dev}").get_json()["name"] == "Till 1"
    r = api.patch(f"/api/v1/devices/{dev}", json={"name": "Till 2", "enabled": False})
    assert r.get_json()["name"] == "Till 2"
    assert r.get_json()["enabled"] is False
    rotated = api.post(f"/api/v1/devices/{dev}/credentials/rotate").get_json()
    assert rotated["username"] == dev
    assert rotated["password"] != first
    listed = api.get("/api/v1/devices").get_json()
    assert [d["device_id"] for d in listed["items"]] == [dev]


def test_device_ids_are_unique_across_tenants(api: Any, make_api_user: Any) -> None:
    dev = _dev()
    assert api.post("/api/v1/devices", json={"device_id": dev, "kind": "door"}).status_code == 201
    other = make_api_user()
    r = other.post("/api/v1/devices", json={"device_id": dev, "kind": "door"})
    assert r.status_code == 409
    assert other.get(f"/api/v1/devices/{dev}").status_code == 404


def test_commands_tasks_and_health(api: Any) -> None:
    dev = _dev()
    api.post("/api/v1/devices", json={"device_id": dev, "kind": "door"})
    r = api.post(f"/api/v1/devices/{dev}/commands", json={"name": "open_door", "args": {}})
    assert r.status_code == 201
    assert r.get_json()["status"] == "pending"
    assert (
        api.post(f"/api/v1/devices/{dev}/commands", json={"name": "format_disk"}).status_code == 422
    )
    assert len(api.get(f"/api/v1/devices/{dev}/commands").get_json()["items"]) == 1
    r = api.post(
        "/api/v1/device-tasks",
        json={
            "name": "nightly",
            "action": "collect_records",
            "times": ["02:00"],
            "selector": {"kind": "door"},
        },
    )
    assert r.status_code == 201, r.get_json()
    assert [t["name"] for t in api.get("/api/v1/device-tasks").get_json()["items"]] == ["nightly"]
    h = api.get(f"/api/v1/devices/{dev}/health").get_json()
    assert h["status"] == "critical"
    assert h["alerts"][0]["code"] == "offline"


def test_receipts_of_a_card_without_changes_list_nothing(api: Any) -> None:
    p = api.post(
        "/api/v1/people",
        json={"person_no": f"P{uuid.uuid4().hex[:8]}", "name": "B", "identity_class": "staff"},
    ).get_json()
    c = api.post(
        f"/api/v1/people/{p['id']}/cards", json={"card_no": f"C{uuid.uuid4().hex[:8]}"}
    ).get_json()
    body = api.get(f"/api/v1/lists/card-blacklist/receipts?card_id={c['id']}").get_json()
    assert body == {"card_id": c["id"], "version": None, "receipts": [], "not_yet_protected": []}
