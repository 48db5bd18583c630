"""MQTT topic names of the device protocol: building, parsing and the subscriptions each side
uses. ``oc/v1/{dev}/...``; ``v1`` is the protocol's major version, the payload's ``v`` its minor.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

from onecard.device_agents.protocol.codes import ErrorReason, ProtocolError

PREFIX: Final = "oc/v1"
DEVICE_ID_RE: Final = re.compile(r"[a-z0-9-]{3,64}")


class Topic(StrEnum):
    """Topic suffix after ``oc/v1/{dev}/``. The value is the suffix itself."""

    STATE = "state"
    HELLO = "up/hello"
    TAP = "up/tap"
    RECORDS = "up/records"
    HEARTBEAT = "up/heartbeat"
    TIME_REQUEST = "up/time"
    RECEIPT = "up/receipt"
    DECISION = "down/tap"
    ACK = "down/ack"
    TIME_RESPONSE = "down/time"
    LISTS = "down/lists"
    CONFIG = "down/config"
    COMMAND = "down/cmd"

    @property
    def upward(self) -> bool:
        """True for what a device publishes (``state`` and ``up/...``)."""
        return not self.value.startswith("down/")

    @property
    def retained(self) -> bool:
        """``state`` and ``down/config`` are published with the retain flag."""
        return self in (Topic.STATE, Topic.CONFIG)

    @property
    def qos(self) -> int:
        """QoS 1 for everything except ``state`` (PROTOCOL "Transport")."""
        return 0 if self is Topic.STATE else 1


_BY_SUFFIX: Final = {t.value: t for t in Topic}

BRIDGE_SUBSCRIPTION: Final = f"$share/bridge/{PREFIX}/+/up/#"
"""What every bridge process subscribes to; the broker splits ``up/...`` among them."""
STATE_SUBSCRIPTION: Final = f"{PREFIX}/+/state"
"""Online/offline of every device (retained), for the platform's registry."""


def check_device_id(device_id: str) -> str:
    """Return ``device_id`` if it matches ``[a-z0-9-]{3,64}``, else raise `ProtocolError`."""
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise ProtocolError(ErrorReason.BAD_DEVICE_ID, repr(device_id[:80]))
    return device_id


def topic(device_id: str, kind: Topic) -> str:
    """The full topic ``oc/v1/{device_id}/{kind}``."""
    return f"{PREFIX}/{check_device_id(device_id)}/{kind.value}"


def device_subscription(device_id: str) -> str:
    """What a device subscribes to: ``oc/v1/{dev}/down/#`` (its broker ACL allows only this)."""
    return f"{PREFIX}/{check_device_id(device_id)}/down/#"


def parse_topic(name: str) -> tuple[str, Topic]:
    """Split a received topic into ``(device_id, Topic)``; `ProtocolError` if it isn't ours.

    A shared-subscription prefix is never part of a received topic name, so none is accepted.
    """
    parts = name.split("/", 3)
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != PREFIX:
        raise ProtocolError(ErrorReason.BAD_TOPIC, name[:120])
    kind = _BY_SUFFIX.get(parts[3])
    if kind is None:
        raise ProtocolError(ErrorReason.BAD_TOPIC, name[:120])
    return check_device_id(parts[2]), kind
