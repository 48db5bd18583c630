"""CPU-card issuance and online loads at the card centre (epurse.md §4.2, §5.2–5.3, §7.1).

* `personalisation_package`: EF 0015/0016 and the card's own keys, diversified for this card
  and wrapped under the purse's transport key, for a personalisation device. Clear keys never
  leave the HSM; only a device that holds the transport key can unwrap them.
* `authorise_load`: verify the card's load MAC1 through the HSM, return MAC2, and post the
  money (Dr cash desk or bank clearing / Cr card float) — idempotent by (ASN, online counter):
  a retried request gets the same host date, time, serial and MAC2 and posts nothing new.

A card's ASN is derived from (tenant, card id) [D]: 16 BCD digits, tenant id (6) ‖ card id
(10), so the card centre needs no extra table to find the card of a clearing record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.device_agents.protocol.cardfiles import bcd_asn, campus_ef0015, ef0016
from onecard.keys.algorithms import Algorithm
from onecard.keys.hsm import LoadRequest, WrappedKeySet
from onecard.keys.layout import CardApplication
from onecard.keys.service import KeyService
from onecard.platform.actors import Actor
from onecard.platform.audit.record import record
from onecard.platform.cards.keymodels import CardLoad
from onecard.platform.cards.keyring import (
    CARD_CENTRE,
    PURSE,
    PURSE_KEYS,
    TRANSPORT,
    ensure_purse_keys,
    key_errors,
    load_plan,
)
from onecard.platform.cards.lifecycle import ACCEPTED
from onecard.platform.cards.models import Card, CardKind
from onecard.platform.db.counters import next_value
from onecard.platform.db.tenancy import require_tenant_id
from onecard.platform.errors import Conflict, DuplicateRequest, ValidationFailed
from onecard.platform.ledger.accounts import tenant_account
from onecard.platform.ledger.posting import LineSpec, PostingRequest, post
from onecard.platform.people.models import Person

LOAD_SOURCES: Final = ("cash_desk", "bank_clearing")
KEY_INDEX: Final = 1
VALIDITY: Final = timedelta(days=3652)


def card_asn(tenant_id: int, card_id: int) -> bytes:
    """The 8-byte ASN of a platform-issued CPU card (see the module docstring)."""
    if not (0 <= tenant_id < 10**6 and 0 <= card_id < 10**10):
        raise ValidationFailed("tenant or card id too large for an ASN", card_id=card_id)
    return bcd_asn(tenant_id * 10**10 + card_id)


def _cpu_card(card: Card) -> None:
    if card.kind != CardKind.CPU.value:
        raise ValidationFailed("only CPU cards carry a purse application", kind=card.kind)
    if card.status not in ACCEPTED:
        raise Conflict(f"card is {card.status}", card_id=card.id, status=card.status)


def _purse_app(session: Session, now: datetime) -> CardApplication:
    app = load_plan(session, now=now).application(PURSE)
    if app is None or app.levels != 1:
        raise Conflict("the card layout plan has no one-level purse application")
    return app


# ------------------------------------------------------------------------------ personalisation
@dataclass(frozen=True)
class PersonalisationPackage:
    """What a personalisation device writes into one card; keys only in wrapped form."""

    card_id: int
    application: str
    aid: str
    algorithm: Algorithm
    asn: bytes
    key_index: int
    key_version: int
    ef0015: bytes
    ef0016: bytes
    keys: WrappedKeySet

    def to_json(self) -> dict[str, Any]:
        """JSON form: bytes as upper-case hex."""
        tk = self.keys.transport
        return {
            "card_id": self.card_id,
            "application": self.application,
            "aid": self.aid,
            "algorithm": self.algorithm.value,
            "alg_id": self.algorithm.alg_id,
            "asn": self.asn.hex().upper(),
            "key_index": self.key_index,
            "key_version": self.key_version,
            "ef0015": self.ef0015.hex().upper(),
            "ef0016": self.ef0016.hex().upper(),
            "transport": {"key": tk.name, "version": tk.version,
                          "kcv": self.keys.transport_kcv.hex().upper()},
            "keys": [
                {"name": k.name, "version": k.version, "algorithm": k.algorithm.value,
                 "wrapped": k.ciphertext.hex().upper(), "kcv": k.kcv.hex().upper()}
                for k in self.keys.keys
            ],
        }  # fmt: skip


def _bcd_date(when: datetime) -> bytes:
    return bytes.fromhex(when.astimezone(UTC).strftime("%Y%m%d"))


def personalisation_package(
    session: Session, service: KeyService, card: Card, *, actor: Actor, now: datetime
) -> PersonalisationPackage:
    """Build the personalisation package of an active CPU card (audited ``cards.personalised``).

    Generates the purse's master and transport keys on a tenant's first CPU card.
    """
    actor.ensure("cards.issue")
    _cpu_card(card)
    tenant_id = require_tenant_id()
    app = _purse_app(session, now)
    asn = card_asn(tenant_id, card.id)
    person = session.get(Person, card.person_id)
    assert person is not None  # cards.person_id is a foreign key
    with key_errors():
        ensure_purse_keys(service, tenant_id)
        version = service.current_version(tenant_id=tenant_id, application=PURSE, key_name="DLK")
        tk = service.current_version(tenant_id=tenant_id, application=PURSE, key_name=TRANSPORT)
        wrapped = service.card_personalisation(
            module=CARD_CENTRE, tenant_id=tenant_id, application=PURSE, key_names=PURSE_KEYS,
            key_version=version, factors=(asn,), transport_version=tk,
        )  # fmt: skip
    expiry = card.expires_at or card.issued_at + VALIDITY
    package = PersonalisationPackage(
        card_id=card.id, application=PURSE, aid=app.aid or "", algorithm=app.algorithm, asn=asn,
        key_index=KEY_INDEX, key_version=version,
        ef0015=campus_ef0015(asn, start=_bcd_date(card.issued_at), expiry=_bcd_date(expiry)),
        ef0016=ef0016(person.name, person.person_no, staff=int(person.identity_class == "staff")),
        keys=wrapped,
    )  # fmt: skip
    data = {"asn": asn.hex().upper(), "key_version": version,
            "transport_kcv": wrapped.transport_kcv.hex().upper()}  # fmt: skip
    record(session, "cards.personalised", actor=actor, now=now, object_type="card",
           object_id=card.id, data=data)  # fmt: skip
    return package


# ------------------------------------------------------------------------------ online loads
@dataclass(frozen=True)
class LoadInput:
    """A terminal's load request (§7.1 step 3) for one card."""

    amount_fen: int
    online_counter: int
    balance_fen: int
    rnd: bytes
    mac1: bytes
    terminal: bytes
    key_version: int
    source: str = "cash_desk"
    asn: bytes | None = None

    def fingerprint(self, asn: bytes) -> str:
        """What a retry must repeat exactly (SHA-256 of the canonical request)."""
        body = {
            "asn": asn.hex(), "amount": self.amount_fen, "counter": self.online_counter,
            "balance": self.balance_fen, "rnd": self.rnd.hex(), "mac1": self.mac1.hex(),
            "terminal": self.terminal.hex(), "key_version": self.key_version,
            "source": self.source,
        }  # fmt: skip
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class LoadApproval:
    """The host's answer: MAC2 over the host date/time, the host serial, and the entry."""

    mac2: bytes
    date: bytes
    time: bytes
    host_serial: int
    entry_id: int
    replayed: bool


def _check_load(request: LoadInput) -> None:
    if request.source not in LOAD_SOURCES:
        raise ValidationFailed(f"source must be one of {', '.join(LOAD_SOURCES)}")
    if not 0 < request.amount_fen <= 0xFFFFFFFF:
        raise ValidationFailed("amount_fen must be positive", field="amount_fen")
    if len(request.rnd) != 4 or len(request.mac1) != 4 or len(request.terminal) != 6:
        raise ValidationFailed("rnd and mac1 are 4 bytes, terminal 6 bytes")


def _mac2(service: KeyService, request: LoadInput, asn: bytes, date: bytes, time: bytes) -> bytes:
    hsm_request = LoadRequest(
        factors=(asn,), rnd=request.rnd, online_counter=request.online_counter,
        balance=request.balance_fen, amount=request.amount_fen, terminal=request.terminal,
        mac1=request.mac1, date=date, time=time,
    )  # fmt: skip
    with key_errors():
        return service.load_mac2(module=CARD_CENTRE, tenant_id=require_tenant_id(),
                                 application=PURSE, key_version=request.key_version,
                                 request=hsm_request)  # fmt: skip


def authorise_load(
    session: Session,
    service: KeyService,
    card: Card,
    request: LoadInput,
    *,
    actor: Actor,
    now: datetime,
) -> LoadApproval:
    """Verify MAC1, post the load and return MAC2 (see the module docstring)."""
    actor.ensure("cards.load")
    _cpu_card(card)
    _check_load(request)
    asn = card_asn(require_tenant_id(), card.id)
    if request.asn is not None and request.asn[-8:] != asn:
        raise ValidationFailed("the card's ASN does not match this card", card_id=card.id)
    fingerprint = request.fingerprint(asn)
    done = session.scalar(
        select(CardLoad).where(
            CardLoad.asn == asn.hex().upper(), CardLoad.online_counter == request.online_counter
        )
    )
    if done is not None:
        return _replay(service, request, asn, done, fingerprint)
    stamp = now.astimezone(UTC)
    date, time = bytes.fromhex(stamp.strftime("%Y%m%d")), bytes.fromhex(stamp.strftime("%H%M%S"))
    mac2 = _mac2(service, request, asn, date, time)
    serial = next_value(session, "cards.load_serial")
    entry_id = _post_load(session, card, request, asn, serial, actor=actor, now=now)
    session.add(CardLoad(
        card_id=card.id, asn=asn.hex().upper(), online_counter=request.online_counter,
        amount_fen=request.amount_fen, balance_before_fen=request.balance_fen,
        terminal=request.terminal.hex().upper(), key_version=request.key_version,
        request_hash=fingerprint, host_date=date.hex(), host_time=time.hex(),
        host_serial=serial, source=request.source, entry_id=entry_id, created_at=now,
    ))  # fmt: skip
    session.flush()
    record(session, "cards.load_authorised", actor=actor, now=now, object_type="card",
           object_id=card.id, data={"amount_fen": request.amount_fen, "host_serial": serial,
                                    "online_counter": request.online_counter})  # fmt: skip
    return LoadApproval(mac2, date, time, serial, entry_id, replayed=False)


def _replay(
    service: KeyService, request: LoadInput, asn: bytes, done: CardLoad, fingerprint: str
) -> LoadApproval:
    if done.request_hash != fingerprint:
        raise DuplicateRequest("this online counter was already loaded with another request",
                               online_counter=request.online_counter)  # fmt: skip
    date, time = bytes.fromhex(done.host_date), bytes.fromhex(done.host_time)
    mac2 = _mac2(service, request, asn, date, time)
    return LoadApproval(mac2, date, time, done.host_serial, done.entry_id, replayed=True)


def _post_load(
    session: Session,
    card: Card,
    request: LoadInput,
    asn: bytes,
    serial: int,
    *,
    actor: Actor,
    now: datetime,
) -> int:
    source = tenant_account(session, request.source)
    float_ = tenant_account(session, "card_float")
    amount = request.amount_fen
    entry = post(session, PostingRequest(
        code="card.load",
        lines=(LineSpec(source.id, amount), LineSpec(float_.id, -amount)),
        idempotency_key=f"cardload:{asn.hex().upper()}:{request.online_counter}",
        memo=f"online load onto card {card.card_no}",
        source="card_centre",
        reference={"card_id": card.id, "host_serial": serial},
    ), actor=actor, now=now)  # fmt: skip
    return entry.id
