"""The clearing verifier (epurse.md §12): TACs through the HSM, counter and serial continuity,
classification, and posting of verified offline purchases to the card float.

Each record of a batch gets one class from a closed vocabulary:

* ``duplicate`` — its identity (ASN, counter kind, counter) was already accepted, earlier or in
  this batch; nothing is stored or posted again (a replayed file adds nothing).
* ``bad_tac`` — the TAC does not verify under the card's DTK (or its key version is unknown);
  reported in the batch, not stored as a fact, not posted.
* ``gap`` — TAC good, but a record is missing before it: the card's previous counter of that
  kind (cards issued by the platform start at counter 0 [D]), or, for purchases, the PSAM's
  previous terminal transaction serial after the lowest serial seen for that terminal.
  Stored and posted like ``ok`` (the platform records what happened) and reported.
* ``ok`` — everything else.

A purchase that is accepted posts Dr tenant ``card_float`` / Cr the merchant account the caller
names, idempotency key ``clearing:{ASN}:{offline counter}``. Load records were posted when the
load was authorised (`onecard.platform.cards.loads`); clearing only verifies and stores them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard.device_agents.protocol.clearing import KIND_PURCHASE, ClearingRecord
from onecard.keys.errors import KeyNotFound, OperationNotPermitted
from onecard.keys.hsm import TacCheck
from onecard.keys.service import KeyService
from onecard.platform.actors import Actor
from onecard.platform.audit.record import record
from onecard.platform.cards.keymodels import ClearingBatch, ClearingRecordRow
from onecard.platform.cards.keyring import CARD_CENTRE, PURSE, key_errors
from onecard.platform.db.tenancy import require_tenant_id
from onecard.platform.errors import NotFound, ValidationFailed
from onecard.platform.ledger.accounts import tenant_account
from onecard.platform.ledger.models import Account
from onecard.platform.ledger.posting import LineSpec, PostingRequest, post

MAX_BATCH: Final = 10_000

CardKey = tuple[str, str]  # (ASN hex, kind)


class Classification(StrEnum):
    """What the verifier concluded about one record."""

    OK = "ok"
    BAD_TAC = "bad_tac"
    DUPLICATE = "duplicate"
    GAP = "gap"


# ------------------------------------------------------------------------------ pure rules
@dataclass
class History:
    """What is already known before a batch: accepted counters per card and kind, and per
    purchase terminal the serials near the batch and the lowest serial ever seen."""

    counters: dict[CardKey, set[int]] = field(default_factory=lambda: defaultdict(set))
    serials: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    lowest_serial: dict[str, int] = field(default_factory=dict)

    def accept(self, rec: ClearingRecord) -> None:
        """Remember an accepted record."""
        self.counters[card_key(rec)].add(rec.counter)
        if rec.kind == KIND_PURCHASE:
            term = rec.terminal.hex().upper()
            self.serials[term].add(rec.serial)
            low = self.lowest_serial.get(term)
            self.lowest_serial[term] = rec.serial if low is None else min(low, rec.serial)


def card_key(rec: ClearingRecord) -> CardKey:
    """The card counter a record used: (ASN hex, "load" | "purchase")."""
    return rec.asn.hex().upper(), rec.kind


def mark_duplicates(records: Sequence[ClearingRecord], history: History) -> list[bool]:
    """Per record: True when its (ASN, kind, counter) is known or repeats within the batch."""
    seen: set[tuple[str, str, int]] = set()
    out = []
    for rec in records:
        ident = (*card_key(rec), rec.counter)
        out.append(rec.counter in history.counters.get(card_key(rec), ()) or ident in seen)
        seen.add(ident)
    return out


def has_gap(rec: ClearingRecord, history: History) -> bool:
    """Whether a record is missing just before ``rec`` (``history`` includes the batch)."""
    if rec.counter > 0 and rec.counter - 1 not in history.counters.get(card_key(rec), ()):
        return True
    if rec.kind != KIND_PURCHASE:
        return False
    term = rec.terminal.hex().upper()
    lowest = history.lowest_serial.get(term, rec.serial)
    return rec.serial > lowest and rec.serial - 1 not in history.serials.get(term, ())


def classify(
    records: Sequence[ClearingRecord], tac_ok: Sequence[bool], history: History
) -> list[Classification]:
    """Classes in input order; ``history`` gains the accepted records (pure, no I/O)."""
    duplicate = mark_duplicates(records, history)
    classes: list[Classification | None] = [None] * len(records)
    for i, rec in enumerate(records):
        if duplicate[i]:
            classes[i] = Classification.DUPLICATE
        elif not tac_ok[i]:
            classes[i] = Classification.BAD_TAC
        else:
            history.accept(rec)
    for i, rec in enumerate(records):
        if classes[i] is None:
            classes[i] = Classification.GAP if has_gap(rec, history) else Classification.OK
    return [c for c in classes if c is not None]


# ------------------------------------------------------------------------------ report
@dataclass(frozen=True)
class RecordVerdict:
    """The verifier's answer for one record of a batch."""

    index: int
    asn: str
    kind: str
    counter: int
    terminal: str
    serial: int
    amount_fen: int
    classification: Classification
    entry_id: int | None = None


@dataclass(frozen=True)
class ClearingReport:
    """Counts per class, the verdicts in input order, and the problems in words."""

    batch_id: int
    counts: Mapping[str, int]
    verdicts: tuple[RecordVerdict, ...]
    problems: tuple[str, ...]
    posted_fen: int

    def to_json(self) -> dict[str, Any]:
        """JSON-able form for the API."""
        return {
            "batch_id": self.batch_id,
            "counts": dict(self.counts),
            "posted_fen": self.posted_fen,
            "problems": list(self.problems),
            "records": [
                {"index": v.index, "asn": v.asn, "kind": v.kind, "counter": v.counter,
                 "terminal": v.terminal, "serial": v.serial, "amount_fen": v.amount_fen,
                 "classification": v.classification.value, "entry_id": v.entry_id}
                for v in self.verdicts
            ],
        }  # fmt: skip


def _problem(i: int, rec: ClearingRecord, cls: Classification) -> str:
    asn, kind = card_key(rec)
    what = {
        Classification.BAD_TAC: "TAC does not verify",
        Classification.DUPLICATE: "already cleared",
        Classification.GAP: "a record before it is missing (counter or terminal serial)",
    }[cls]
    return (f"record {i}: card {asn} {kind} counter {rec.counter}, terminal "
            f"{rec.terminal.hex().upper()} serial {rec.serial}: {what}")  # fmt: skip


# ------------------------------------------------------------------------------ service
def parse_records(raw: Iterable[bytes]) -> list[ClearingRecord]:
    """Parse 80-byte records; `ValidationFailed` names the first malformed one."""
    records = []
    for i, blob in enumerate(raw):
        try:
            records.append(ClearingRecord.from_bytes(blob))
        except ValueError as err:
            raise ValidationFailed(f"record {i}: {err}", index=i) from None
    if not records or len(records) > MAX_BATCH:
        raise ValidationFailed(f"a batch holds 1 to {MAX_BATCH} records")
    return records


def verify_tacs(
    service: KeyService, records: Sequence[ClearingRecord], skip: Sequence[bool]
) -> list[bool]:
    """TAC verdicts through the HSM, one call per key version; skipped records get False."""
    tenant_id = require_tenant_id()
    groups: dict[int, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        if not skip[i]:
            groups[rec.key_version].append(i)
    verdicts = [False] * len(records)
    for version, indices in groups.items():
        checks = [TacCheck(records[i].key_factors(), records[i].tac_data(), records[i].tac)
                  for i in indices]  # fmt: skip
        with key_errors():
            try:
                got = service.verify_tacs(
                    module=CARD_CENTRE,
                    tenant_id=tenant_id,
                    application=PURSE,
                    key_version=version,
                    checks=checks,
                )
            except (KeyNotFound, OperationNotPermitted):
                continue  # unknown or retired key version: every TAC of the group fails
        for i, ok in zip(indices, got, strict=True):
            verdicts[i] = ok
    return verdicts


def load_history(session: Session, records: Sequence[ClearingRecord]) -> History:
    """The accepted records of the batch's cards and the serials near its terminals."""
    history = History()
    asns = sorted({card_key(r)[0] for r in records})
    rows = session.execute(
        select(ClearingRecordRow.asn, ClearingRecordRow.kind, ClearingRecordRow.counter).where(
            ClearingRecordRow.asn.in_(asns)
        )
    )
    for asn, kind, counter in rows:
        history.counters[(asn, kind)].add(counter)
    for term, serials in _batch_serials(records).items():
        _load_terminal(session, history, term, min(serials), max(serials))
    return history


def _batch_serials(records: Sequence[ClearingRecord]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for rec in records:
        if rec.kind == KIND_PURCHASE:
            out[rec.terminal.hex().upper()].append(rec.serial)
    return out


def _load_terminal(session: Session, history: History, term: str, lo: int, hi: int) -> None:
    purchases = (ClearingRecordRow.kind == KIND_PURCHASE, ClearingRecordRow.terminal == term)
    lowest = session.scalar(select(func.min(ClearingRecordRow.serial)).where(*purchases))
    if lowest is not None:
        history.lowest_serial[term] = lowest
    near = select(ClearingRecordRow.serial).where(
        *purchases, ClearingRecordRow.serial.between(lo - 1, hi)
    )
    history.serials[term].update(session.scalars(near))


def clear_batch(
    session: Session,
    service: KeyService,
    raw_records: Sequence[bytes],
    *,
    merchant_account_id: int,
    actor: Actor,
    now: datetime,
) -> ClearingReport:
    """Verify, classify, store and post one batch of clearing records (idempotent by record)."""
    actor.ensure("clearing.submit")
    records = parse_records(raw_records)
    merchant = _merchant(session, merchant_account_id)
    history = load_history(session, records)
    duplicate = mark_duplicates(records, history)
    classes = classify(records, verify_tacs(service, records, duplicate), history)
    batch = ClearingBatch(merchant_account_id=merchant.id, record_count=len(records), counts={},
                          problems={}, actor_type=actor.type, actor_id=actor.id,
                          submitted_at=now)  # fmt: skip
    counts = {c.value: classes.count(c) for c in Classification}
    pairs = enumerate(zip(records, classes, strict=True))
    problems = tuple(_problem(i, r, c) for i, (r, c) in pairs if c is not Classification.OK)
    batch.counts, batch.problems = counts, {"problems": list(problems)}
    session.add(batch)
    session.flush()
    verdicts = _store_and_post(session, batch, records, classes, merchant, actor=actor, now=now)
    posted = sum(v.amount_fen for v in verdicts if v.entry_id is not None)
    record(session, "clearing.batch_verified", actor=actor, now=now, object_type="clearing_batch",
           object_id=batch.id, data={"counts": counts, "posted_fen": posted})  # fmt: skip
    return ClearingReport(batch.id, counts, tuple(verdicts), problems, posted)


def _merchant(session: Session, account_id: int) -> Account:
    merchant = session.get(Account, account_id)
    if merchant is None:
        raise NotFound(f"account {account_id} not found", account_id=account_id)
    if merchant.kind == "card_float" or merchant.owner_type == "person":
        raise ValidationFailed("the merchant account may not be a purse or the card float")
    return merchant


def _store_and_post(
    session: Session,
    batch: ClearingBatch,
    records: Sequence[ClearingRecord],
    classes: Sequence[Classification],
    merchant: Account,
    *,
    actor: Actor,
    now: datetime,
) -> list[RecordVerdict]:
    float_id = tenant_account(session, "card_float").id
    verdicts = []
    for i, (rec, cls) in enumerate(zip(records, classes, strict=True)):
        entry_id = None
        if cls in (Classification.OK, Classification.GAP):
            if rec.kind == KIND_PURCHASE and rec.amount > 0:
                entry_id = _post_purchase(session, rec, float_id, merchant, actor=actor, now=now)
            session.add(_row(batch, rec, cls, entry_id, now))
        asn, kind = card_key(rec)
        verdicts.append(RecordVerdict(i, asn, kind, rec.counter, rec.terminal.hex().upper(),
                                      rec.serial, rec.amount, cls, entry_id))  # fmt: skip
    session.flush()
    return verdicts


def _post_purchase(
    session: Session,
    rec: ClearingRecord,
    float_id: int,
    merchant: Account,
    *,
    actor: Actor,
    now: datetime,
) -> int:
    asn = rec.asn.hex().upper()
    request = PostingRequest(
        code="card.clearing",
        lines=(LineSpec(float_id, rec.amount), LineSpec(merchant.id, -rec.amount)),
        idempotency_key=f"clearing:{asn}:{rec.counter}",
        memo=f"offline purchase, terminal {rec.terminal.hex().upper()} serial {rec.serial}",
        source="clearing",
        reference={"asn": asn, "counter": rec.counter, "serial": rec.serial},
    )
    return post(session, request, actor=actor, now=now).id


def _row(
    batch: ClearingBatch,
    rec: ClearingRecord,
    cls: Classification,
    entry_id: int | None,
    now: datetime,
) -> ClearingRecordRow:
    return ClearingRecordRow(
        batch_id=batch.id, asn=rec.asn.hex().upper(), counter=rec.counter, kind=rec.kind,
        terminal=rec.terminal.hex().upper(), serial=rec.serial, ttype=rec.ttype,
        amount_fen=rec.amount, balance_before_fen=rec.balance_before,
        key_version=rec.key_version, occurred=(rec.date + rec.time).hex(), raw=rec.to_bytes(),
        classification=cls.value, entry_id=entry_id, recorded_at=now,
    )  # fmt: skip
