"""Offline sales paid from the CPU card's own purse (PBOC e-purse, PSAM purchase at the POS).

The POS's record carries the clearing record its PSAM produced (epurse.md §12, hex in
``clearing``). The platform's clearing verifier
(:func:`onecard.platform.cards.clearing.clear_batch`) checks each TAC in the key service,
classifies the record and posts an accepted purchase Dr card float / Cr the POS's merchant
account (idempotent by card and counter). Canteen then records the sale, paid from the card
purse and linked to the clearing record and its entry, so the day's statement counts it.

Every record is still a fact: one that is not a well-formed purchase record (``bad_clearing``),
whose TAC fails (``bad_tac``) or that repeats a purchase already cleared
(``duplicate_clearing``) is recorded unposted and flagged; the first two open a ``bad_tac``
case. A verified record after a missing one is posted and flagged ``clearing_gap``. No offline
allowance applies: the card cannot spend more than it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.device_agents.protocol.clearing import KIND_PURCHASE, ClearingRecord
from onecard.keys.service import KeyService
from onecard.modules.canteen import rules
from onecard.modules.canteen.cases import open_case
from onecard.modules.canteen.context import context_for, get_or_raise
from onecard.modules.canteen.models import PAID_FROM_CARD, Merchant, Pos, Sale
from onecard.modules.canteen.rules import CanteenReason
from onecard.modules.canteen.services import record_sale
from onecard.platform.actors import Actor
from onecard.platform.cards.clearing import Classification, RecordVerdict, card_key, clear_batch
from onecard.platform.cards.keymodels import ClearingRecordRow
from onecard.platform.cards.loads import card_asn
from onecard.platform.cards.models import Card
from onecard.platform.db.tenancy import get_scoped, require_tenant_id

CLASS_FLAGS = {
    Classification.OK: (),
    Classification.GAP: ("clearing_gap",),
    Classification.BAD_TAC: ("bad_tac",),
    Classification.DUPLICATE: ("duplicate_clearing",),
}
CASE_FLAGS = frozenset({"bad_tac", "bad_clearing"})


@dataclass(frozen=True)
class CardSale:
    """One card-purse sale a POS made offline, read from its stored device record
    (amounts as the record says them, made safe to store; the clearing record decides)."""

    record_id: int
    device_id: str
    seq: int
    card_no: str | None
    amount_fen: int
    list_fen: int | None
    occurred_at: datetime | None
    clearing: str
    period: str | None = None
    flags: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The sale's idempotency key: its device record, i.e. ``(device, epoch, seq)``."""
        return f"rec:{self.record_id}"

    def parsed(self) -> ClearingRecord | None:
        """The clearing record, or ``None`` when it is not a well-formed §12 record of a
        purchase (a load record is no sale)."""
        try:
            record = ClearingRecord.from_bytes(bytes.fromhex(self.clearing))
        except (TypeError, ValueError):
            return None
        return record if record.kind == KIND_PURCHASE else None


@dataclass(frozen=True)
class CardReport:
    """What one upload's card-purse sales changed."""

    recorded: int
    posted_fen: int
    case_ids: tuple[int, ...]


def record_card_sales(
    session: Session,
    pos: Pos,
    sales: Sequence[CardSale],
    *,
    keys: KeyService,
    actor: Actor,
    now: datetime,
) -> CardReport:
    """Clear the sales' records in one batch through the platform's verifier and record a
    sale for each (idempotent per device record). ``actor`` needs ``clearing.submit``."""
    fresh = [s for s in sales if session.scalar(select(Sale.id).where(Sale.key == s.key)) is None]
    parsed = [s.parsed() for s in fresh]
    verdicts = _clear(session, pos, keys, fresh, parsed, actor=actor, now=now)
    recorded, cases = [], set[int]()
    for item, rec, verdict in zip(fresh, parsed, verdicts, strict=True):
        sale = _record_one(session, pos, item, rec, verdict, actor=actor, now=now)
        recorded.append(sale)
        if CASE_FLAGS & set(sale.flags):
            detail = {"seq": sale.device_seq, "record_id": sale.record_id}
            cases.add(open_case(session, sale, "bad_tac", detail, actor=actor, now=now).id)
    posted = sum(s.amount_fen for s in recorded if s.entry_id is not None)
    return CardReport(len(recorded), posted, tuple(sorted(cases)))


def _clear(
    session: Session,
    pos: Pos,
    keys: KeyService,
    sales: Sequence[CardSale],
    parsed: Sequence[ClearingRecord | None],
    *,
    actor: Actor,
    now: datetime,
) -> list[RecordVerdict | None]:
    """The verifier's verdict per sale (``None`` for a record that does not parse)."""
    raw = [bytes.fromhex(s.clearing) for s, rec in zip(sales, parsed, strict=True) if rec]
    if not raw:
        return [None] * len(sales)
    merchant = get_or_raise(session, Merchant, pos.merchant_id)
    report = clear_batch(
        session, keys, raw, merchant_account_id=merchant.account_id, actor=actor, now=now
    )
    found = iter(report.verdicts)
    return [next(found) if rec else None for rec in parsed]


def _record_one(
    session: Session,
    pos: Pos,
    item: CardSale,
    rec: ClearingRecord | None,
    verdict: RecordVerdict | None,
    *,
    actor: Actor,
    now: datetime,
) -> Sale:
    occurred = item.occurred_at or now
    card = _card(session, rec, item.card_no)
    amount = rec.amount if rec else item.amount_fen
    list_fen = item.list_fen if item.list_fen is not None and item.list_fen >= amount else amount
    ctx = context_for(session, pos, card.person_id if card else None, occurred)
    period = item.period or (ctx.period.key if ctx.period else None)
    sale_verdict = rules.Verdict(
        True, CanteenReason.OK, list_fen, list_fen - amount, amount, period
    )
    return record_sale(
        session, pos, card, ctx, sale_verdict, {}, key=item.key,
        entry_id=verdict.entry_id if verdict else None, items=(), source="offline",
        occurred_at=occurred, now=now, actor=actor, card_no=item.card_no or "",
        flags=_flags(item, rec, verdict), device_seq=item.seq, record_id=item.record_id,
        paid_from=PAID_FROM_CARD, clearing_record_id=_clearing_row(session, rec, verdict),
    )  # fmt: skip


def _flags(item: CardSale, rec: ClearingRecord | None, verdict: RecordVerdict | None) -> list[str]:
    flags = list(item.flags)
    if rec is None or verdict is None:
        flags.append("bad_clearing")
    else:
        flags += CLASS_FLAGS[verdict.classification]
        if item.amount_fen != rec.amount:
            flags.append("amount_mismatch")  # the TAC-proven amount is the one recorded
    return list(dict.fromkeys(flags))


def _card(session: Session, rec: ClearingRecord | None, card_no: str | None) -> Card | None:
    """The card the clearing record's ASN names (a platform-issued CPU card of this tenant),
    else the card the record's credential named."""
    if rec is not None:
        card = _card_of_asn(session, rec.card_factor)
        if card is not None:
            return card
    if not card_no:
        return None
    return session.scalar(select(Card).where(Card.card_no == card_no))


def _card_of_asn(session: Session, asn: bytes) -> Card | None:
    try:
        number = int(asn.hex())  # BCD: tenant id (6 digits) ‖ card id (10 digits)
    except ValueError:
        return None  # not one of our BCD ASNs
    tenant_id, card_id = divmod(number, 10**10)
    if tenant_id != require_tenant_id():
        return None
    card = get_scoped(session, Card, card_id)
    return card if card is not None and card_asn(tenant_id, card.id) == asn else None


def _clearing_row(
    session: Session, rec: ClearingRecord | None, verdict: RecordVerdict | None
) -> int | None:
    """The stored clearing record of this purchase (for a duplicate: the earlier one)."""
    if rec is None or verdict is None or verdict.classification is Classification.BAD_TAC:
        return None
    asn, kind = card_key(rec)
    return session.scalar(
        select(ClearingRecordRow.id).where(
            ClearingRecordRow.asn == asn,
            ClearingRecordRow.kind == kind,
            ClearingRecordRow.counter == rec.counter,
        )
    )
