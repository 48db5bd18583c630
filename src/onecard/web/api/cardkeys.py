"""CPU-card keys at the card centre: personalisation packages, online loads, clearing batches.

``POST /cards/{card_id}/personalisation`` returns the card's files and its keys wrapped under
the transport key; ``POST /cards/{card_id}/loads`` verifies a load MAC1 and returns MAC2
(idempotent by the card's online counter); ``POST /clearing/batches`` verifies and posts a
batch of 80-byte clearing records (idempotent by record). The HSM comes from ``[keys]`` in the
settings, opened once per app (`keyring`).
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from pydantic import BaseModel, ConfigDict, Field

from onecard.platform.cards import clearing, loads
from onecard.platform.cards.keyring import Keyring
from onecard.platform.cards.lifecycle import get_card
from onecard.platform.errors import ValidationFailed
from onecard.web.api.base import Call, endpoint
from onecard.web.state import state

KEYRING = "onecard.keyring"
HEX4 = r"^[0-9A-Fa-f]{8}$"


def keyring() -> Keyring:
    """The app's keyring (tests may place one in ``app.extensions["onecard.keyring"]``)."""
    ring = current_app.extensions.get(KEYRING)
    if ring is None:
        ring = Keyring.from_settings(state().settings.keys)
        current_app.extensions[KEYRING] = ring
    return ring  # type: ignore[no-any-return]


class LoadIn(BaseModel):
    """A terminal's load request: what INITIALIZE FOR LOAD returned, and the amount."""

    model_config = ConfigDict(extra="forbid", strict=True)
    amount_fen: int = Field(gt=0, le=0xFFFFFFFF)
    online_counter: int = Field(ge=0, le=0xFFFF)
    balance_fen: int = Field(ge=0, le=0xFFFFFFFF)
    rnd: str = Field(pattern=HEX4)
    mac1: str = Field(pattern=HEX4)
    terminal: str = Field(pattern=r"^[0-9A-Fa-f]{12}$")
    key_version: int = Field(ge=0, le=0xFF)
    source: str = Field(default="cash_desk", pattern=r"^(cash_desk|bank_clearing)$")
    asn: str | None = Field(default=None, pattern=r"^([0-9A-Fa-f]{16}|[0-9A-Fa-f]{20})$")


class ClearingBatchIn(BaseModel):
    """Clearing records (hex of the 80-byte §12 layout) and the merchant account to credit."""

    model_config = ConfigDict(extra="forbid", strict=True)
    merchant_account_id: int = Field(gt=0)
    records: list[str] = Field(min_length=1, max_length=clearing.MAX_BATCH)


@endpoint(
    "POST", "/cards/{card_id}/personalisation", tag="cards", permission="cards.issue", status=201
)
def personalisation(call: Call) -> Any:
    """Personalisation package of a CPU card: EF 0015/0016 and its keys wrapped (hex)."""
    card = get_card(call.session, call.path["card_id"], actor=call.actor)
    service = keyring().service(call.session, actor=call.actor, now=call.now)
    package = loads.personalisation_package(
        call.session, service, card, actor=call.actor, now=call.now
    )
    return package.to_json()


@endpoint("POST", "/cards/{card_id}/loads", tag="cards", body=LoadIn, permission="cards.load")
def authorise_load(call: Call) -> Any:
    """Authorise an online load: verify MAC1, post the money, return MAC2 (idempotent)."""
    body: LoadIn = call.body
    card = get_card(call.session, call.path["card_id"], actor=call.actor)
    request = loads.LoadInput(
        amount_fen=body.amount_fen,
        online_counter=body.online_counter,
        balance_fen=body.balance_fen,
        rnd=bytes.fromhex(body.rnd),
        mac1=bytes.fromhex(body.mac1),
        terminal=bytes.fromhex(body.terminal),
        key_version=body.key_version,
        source=body.source,
        asn=bytes.fromhex(body.asn) if body.asn else None,
    )
    service = keyring().service(call.session, actor=call.actor, now=call.now)
    approval = loads.authorise_load(
        call.session, service, card, request, actor=call.actor, now=call.now
    )
    return {
        "mac2": approval.mac2.hex().upper(),
        "date": approval.date.hex(),
        "time": approval.time.hex(),
        "host_serial": approval.host_serial,
        "entry_id": approval.entry_id,
        "replayed": approval.replayed,
    }


@endpoint(
    "POST",
    "/clearing/batches",
    tag="clearing",
    body=ClearingBatchIn,
    permission="clearing.submit",
    status=201,
)
def submit_batch(call: Call) -> Any:
    """Verify a batch of clearing records; post verified purchases to the card float."""
    body: ClearingBatchIn = call.body
    raw = [_hex(i, text) for i, text in enumerate(body.records)]
    service = keyring().service(call.session, actor=call.actor, now=call.now)
    report = clearing.clear_batch(
        call.session,
        service,
        raw,
        merchant_account_id=body.merchant_account_id,
        actor=call.actor,
        now=call.now,
    )
    return report.to_json()


def _hex(index: int, text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValidationFailed(f"record {index} is not hex", index=index) from None
