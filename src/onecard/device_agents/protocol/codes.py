"""Closed vocabularies of the device protocol: reason codes, device kinds, command names,
credential kinds and the reasons a payload is refused (`ProtocolError`).

A module keeps its own finer reasons (modules.md, e.g. ``apb_violation``); on the wire they travel
in a decision's or record's ``detail`` beside the protocol-level `ReasonCode` a terminal can act
on without knowing the module.
"""

from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    """Why a tap was allowed or denied; what a terminal shows and logs. Closed."""

    OK = "OK"
    CARD_UNKNOWN = "CARD_UNKNOWN"
    CARD_LOST = "CARD_LOST"
    CARD_EXPIRED = "CARD_EXPIRED"
    CARD_NOT_YET_VALID = "CARD_NOT_YET_VALID"
    CARD_FROZEN = "CARD_FROZEN"
    CARD_RETURNED = "CARD_RETURNED"
    PERSON_INACTIVE = "PERSON_INACTIVE"
    WRONG_TENANT = "WRONG_TENANT"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    NOT_PERMITTED = "NOT_PERMITTED"
    OUTSIDE_SCHEDULE = "OUTSIDE_SCHEDULE"
    ANTI_PASSBACK = "ANTI_PASSBACK"
    LIMIT_REACHED = "LIMIT_REACHED"
    DUPLICATE = "DUPLICATE"
    CLOCK_INVALID = "CLOCK_INVALID"
    LISTS_STALE = "LISTS_STALE"
    OFFLINE_NOT_ALLOWED = "OFFLINE_NOT_ALLOWED"
    PENDING = "PENDING"
    DEVICE_DISABLED = "DEVICE_DISABLED"
    MODULE_DISABLED = "MODULE_DISABLED"
    NO_HANDLER = "NO_HANDLER"
    MALFORMED = "MALFORMED"
    INTERNAL_ERROR = "INTERNAL_ERROR"


ALLOW_REASONS = frozenset({ReasonCode.OK, ReasonCode.PENDING})
"""Reasons that may accompany ``allow = true`` (``PENDING``: multi-card, awaiting first card)."""


class DeviceKind(StrEnum):
    """What a terminal is; the platform's device registry holds the same vocabulary."""

    DOOR = "door"
    POS = "pos"
    ATTENDANCE = "attendance"
    GATE = "gate"
    ELEVATOR = "elevator"
    BUS = "bus"
    KIOSK = "kiosk"
    METER = "meter"
    VALVE = "valve"
    TOUR = "tour"


class CredentialKind(StrEnum):
    """How a person presented themselves: card UID (hex), card number, QR text, PIN id, plate."""

    UID = "uid"
    CARD_NO = "card_no"
    QR = "qr"
    PIN = "pin"
    PLATE = "plate"


class Direction(StrEnum):
    """Passage direction of a door, gate or lane tap."""

    IN = "in"
    OUT = "out"


class CommandName(StrEnum):
    """Remote commands on ``down/cmd``. ``error`` answers a message the platform refused."""

    OPEN_DOOR = "open_door"
    SYNC_TIME = "sync_time"
    RESEND_RECORDS = "resend_records"
    REBOOT = "reboot"
    ROLLBACK_CONFIG = "rollback_config"
    ERROR = "error"


class ReaderState(StrEnum):
    """Health of the card reader as a heartbeat reports it."""

    OK = "ok"
    FAULT = "fault"
    ABSENT = "absent"


class ErrorReason(StrEnum):
    """Why a payload or topic was refused (`ProtocolError.reason`)."""

    TOO_LARGE = "too_large"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    BAD_TYPE = "bad_type"
    BAD_VALUE = "bad_value"
    UNSUPPORTED_VERSION = "unsupported_version"
    BAD_TOPIC = "bad_topic"
    BAD_DEVICE_ID = "bad_device_id"
    BAD_HASH = "bad_hash"
    BAD_SIGNATURE = "bad_signature"
    WRONG_DEVICE = "wrong_device"
    STALE_VERSION = "stale_version"
    BAD_CHUNKS = "bad_chunks"


class ProtocolError(ValueError):
    """A payload, topic or bundle that breaks the contract. ``reason`` is closed, ``detail``
    is for the log (never contains key bytes)."""

    def __init__(self, reason: ErrorReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
