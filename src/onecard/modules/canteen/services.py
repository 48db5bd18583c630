"""Canteen services: online sales, recording a sale, the cashier's refund of the last sale, and
subsidy-first spending lines.

What a decision needs (meal period, holder rule, usage, price) lives in ``context``, set-up in
``setup``, the tap flow in ``tapflow``, uploaded POS records in ``recordflow``
(account-paid sales in ``offline``, card-purse sales in ``cardpurse``, cases in ``cases``), POS
MAC keys in ``terminalkeys``, the daily statement in ``settlement`` and its payout in ``payout``.

Plain functions: the caller's session, domain objects, keyword-only ``actor`` and ``now``; they
never commit. Decisions come from :mod:`onecard.modules.canteen.rules`, the same code the POS
runs offline. Money moves only through the platform ledger (``charge`` spends the subsidy purse
before the cash purse).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard.modules.canteen import rules
from onecard.modules.canteen.context import (
    SaleContext,
    audit_event,
    card_reason,
    context_for,
    get_or_raise,
    price_of,
)
from onecard.modules.canteen.models import (
    PAID_FROM_ACCOUNTS,
    Pos,
    Refund,
    Sale,
    Settlement,
)
from onecard.modules.canteen.rules import CanteenReason, Mode
from onecard.platform.actors import Actor
from onecard.platform.cards.models import Card
from onecard.platform.errors import Conflict, InsufficientFunds, NotFound, ValidationFailed
from onecard.platform.ledger.models import Account, AccountType, Balance, Entry, Line
from onecard.platform.ledger.operations import PURSE, SUBSIDY, charge
from onecard.platform.ledger.posting import LineSpec, reverse

KEY = "canteen"
MERCHANT_KIND = "canteen.merchant"
MEAL_CODE = "canteen.meal"


# --- online sale -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SaleRequest:
    """What the POS sends for an online sale. ``request_id`` is unique per POS request."""

    request_id: str
    list_fen: int | None = None  # free mode (or a menu total the POS computed)
    items: tuple[tuple[str, int], ...] = ()  # menu mode: (item code, quantity)
    pin_verified: bool = False


@dataclass(frozen=True)
class SaleResult:
    """The answer to the POS: the verdict and, when allowed, the recorded sale."""

    allow: bool
    reason: CanteenReason
    sale_id: int | None = None
    amount_fen: int = 0
    discount_fen: int = 0
    subsidy_fen: int = 0
    purse_fen: int = 0
    replayed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def code(self) -> str:
        """The protocol reason code."""
        return rules.PROTOCOL_REASON[self.reason].value


def sell(
    session: Session, pos: Pos, card: Card, request: SaleRequest, *, actor: Actor, now: datetime
) -> SaleResult:
    """Decide and record an online sale; the ledger spends the subsidy purse first."""
    actor.ensure("canteen.sell")
    key = f"sell:{pos.device_id}:{request.request_id}"
    earlier = session.scalar(select(Sale).where(Sale.key == key))
    if earlier is not None:
        return _result(earlier, replayed=True)
    blocked = card_reason(card, now)
    if blocked is not None:
        return SaleResult(False, blocked)
    ctx = context_for(session, pos, card.person_id, now)
    list_fen = price_of(session, pos, ctx.period, list_fen=request.list_fen, items=request.items)
    verdict = rules.decide_sale(
        ctx.rule,
        ctx.usage,
        mode=Mode(pos.mode),
        list_fen=list_fen,
        period=ctx.period,
        pin_verified=request.pin_verified,
    )
    if not verdict.allow:
        return SaleResult(False, verdict.reason, amount_fen=verdict.amount_fen)
    merchant_account = get_or_raise(session, Account, ctx.merchant.account_id)
    try:
        with session.begin_nested():
            entry = charge(
                session,
                card.person_id,
                merchant_account,
                verdict.amount_fen,
                actor=actor,
                now=now,
                code=MEAL_CODE,
                idempotency_key=f"canteen:{key}",
                occurred_at=now,
            )
    except InsufficientFunds:
        return SaleResult(False, CanteenReason.INSUFFICIENT_FUNDS, amount_fen=verdict.amount_fen)
    split = entry_split(session, entry.id)
    sale = record_sale(
        session,
        pos,
        card,
        ctx,
        verdict,
        split,
        key=key,
        entry_id=entry.id,
        items=request.items,
        source="online",
        occurred_at=now,
        now=now,
        actor=actor,
    )
    return _result(sale)


def entry_split(session: Session, entry_id: int) -> dict[str, int]:
    """Fen the entry took from each holder purse kind and from receivables."""
    rows = session.execute(
        select(Account.kind, func.sum(Line.amount_fen))
        .join(Line, Line.account_id == Account.id)
        .where(Line.entry_id == entry_id, Line.amount_fen > 0)
        .group_by(Account.kind)
    )
    return {kind: int(total) for kind, total in rows}


def record_sale(
    session: Session,
    pos: Pos,
    card: Card | None,
    ctx: SaleContext,
    verdict: rules.Verdict,
    split: dict[str, int],
    *,
    key: str,
    entry_id: int | None,
    items: Iterable[tuple[str, int]],
    source: str,
    occurred_at: datetime,
    now: datetime,
    actor: Actor,
    card_no: str | None = None,
    flags: Sequence[str] = (),
    device_seq: int | None = None,
    record_id: int | None = None,
    paid_from: str = PAID_FROM_ACCOUNTS,
    clearing_record_id: int | None = None,
) -> Sale:
    """Append the sale (a fact) and, when an operator made it, its audit event
    ``canteen.sale.<source>`` (a terminal's sales are facts enough: this row and its entry).

    ``record_id`` links the uploaded device record an offline sale came from; a sale paid from
    the CPU card's own purse says so in ``paid_from`` and links its clearing record.
    """
    sale = Sale(
        key=key,
        merchant_id=pos.merchant_id,
        pos_id=pos.id,
        card_id=card.id if card else None,
        card_no=card.card_no if card else (card_no or ""),
        person_id=card.person_id if card else None,
        mode=pos.mode,
        source=source,
        period=verdict.period,
        business_day=ctx.day,
        list_fen=verdict.list_fen,
        discount_fen=verdict.discount_fen,
        amount_fen=verdict.amount_fen,
        subsidy_fen=split.get(SUBSIDY, 0),
        purse_fen=split.get(PURSE, 0),
        receivable_fen=split.get("receivables", 0),
        entry_id=entry_id,
        items=[list(i) for i in items],
        flags=list(flags),
        device_seq=device_seq,
        occurred_at=occurred_at,
        recorded_at=now,
        actor_id=actor.id,
        record_id=record_id,
        paid_from=paid_from,
        clearing_record_id=clearing_record_id,
    )
    session.add(sale)
    session.flush()
    data = {
        "key": key,
        "amount_fen": sale.amount_fen,
        "entry_id": entry_id,
        "paid_from": paid_from,
        "flags": list(flags),
    }
    if actor.type != "device":
        # A terminal's sale is a fact (this row and its ledger entry), not an operator action:
        # an audit event per tap also serialised every sale of a tenant on the audit chain.
        audit_event(
            session, f"canteen.sale.{source}", sale.id, data, actor, now, obj="canteen_sale"
        )
    return sale


def _result(sale: Sale, *, replayed: bool = False) -> SaleResult:
    return SaleResult(
        True,
        CanteenReason.OK,
        sale_id=sale.id,
        amount_fen=sale.amount_fen,
        discount_fen=sale.discount_fen,
        subsidy_fen=sale.subsidy_fen,
        purse_fen=sale.purse_fen,
        replayed=replayed,
    )


# --- refund of the last sale -----------------------------------------------------------------


def refund_last_sale(
    session: Session, pos: Pos, *, reason: str, actor: Actor, now: datetime
) -> Refund:
    """The cashier takes back the POS's most recent sale: a reversal entry, audited.

    Only the last sale, only once, and only before its day is settled. The reversal returns
    each fen to where it came from (subsidy to the subsidy purse, cash to the cash purse).
    """
    actor.ensure("canteen.refund")
    if not reason.strip():
        raise ValidationFailed("a refund needs a reason", field="reason")
    sale = session.scalar(
        select(Sale).where(Sale.pos_id == pos.id).order_by(Sale.id.desc()).limit(1)
    )
    if sale is None or sale.entry_id is None:
        raise NotFound("this POS has no sale to refund")
    if session.scalar(select(Refund.id).where(Refund.sale_id == sale.id)) is not None:
        raise Conflict("the last sale was already refunded", sale_id=sale.id)
    if _settled(session, sale.merchant_id, sale.business_day):
        raise Conflict("the sale's day is already settled", sale_id=sale.id)
    entry = get_or_raise(session, Entry, sale.entry_id)
    reversal = reverse(
        session,
        entry,
        idempotency_key=f"canteen:refund:{sale.id}",
        actor=actor,
        now=now,
        memo=f"canteen refund: {reason}"[:500],
    )
    refund = Refund(
        sale_id=sale.id,
        pos_id=pos.id,
        merchant_id=sale.merchant_id,
        business_day=sale.business_day,
        amount_fen=sale.amount_fen,
        entry_id=reversal.id,
        reason=reason[:200],
        actor_id=actor.id,
        created_at=now,
    )
    session.add(refund)
    session.flush()
    data = {"sale_id": sale.id, "amount_fen": sale.amount_fen, "reason": reason}
    audit_event(
        session,
        "canteen.sale.refunded",
        refund.id,
        {**data, "entry_id": reversal.id},
        actor,
        now,
        obj="canteen_refund",
    )
    return refund


def _settled(session: Session, merchant_id: int, day: date) -> bool:
    stmt = select(Settlement.id).where(
        Settlement.merchant_id == merchant_id, Settlement.business_day == day
    )
    return session.scalar(stmt) is not None


# --- spending ------------------------------------------------------------------------------


def spend_lines(
    session: Session, person_id: int, merchant_account_id: int, amount_fen: int
) -> tuple[LineSpec, ...] | None:
    """Subsidy-first lines for a spend, from current balances; ``None`` when they do not cover.

    Read-only (a holder without accounts simply has nothing to spend). The posting locks and
    re-checks the minimums, so a concurrent spend makes it fail rather than overdraw.
    """
    found = holder_balances(session, person_id)
    subsidy_id, subsidy_fen = found.get(SUBSIDY, (None, 0))
    purse_id, purse_fen = found.get(PURSE, (None, 0))
    from_subsidy = min(max(subsidy_fen, 0), amount_fen)
    from_purse = amount_fen - from_subsidy
    if from_purse > max(purse_fen, 0):
        return None
    lines = [LineSpec(merchant_account_id, -amount_fen)]
    if from_subsidy and subsidy_id is not None:
        lines.append(LineSpec(subsidy_id, from_subsidy))
    if from_purse and purse_id is not None:
        lines.append(LineSpec(purse_id, from_purse))
    return tuple(lines)


def holder_balances(session: Session, person_id: int) -> dict[str, tuple[int, int]]:
    rows = session.execute(
        select(Account.id, Account.kind, Account.type, Balance.raw_fen)
        .join(Balance, Balance.account_id == Account.id)
        .where(
            Account.owner_type == "person",
            Account.owner_id == person_id,
            Account.kind.in_((SUBSIDY, PURSE)),
        )
    )
    return {kind: (aid, raw * AccountType(typ).sign) for aid, kind, typ, raw in rows}
