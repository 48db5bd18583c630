"""Offline sales: what POS terminals decided alone, recorded after the fact.

The platform never refuses a fact (modules.md X-R12): every uploaded sale is stored and, when
its MAC verifies, posted: subsidy purse first, then the cash purse, and whatever the purses do
not cover goes to ``Assets:Receivables:Holders``. The canteen's offline policy is then checked
across every POS: a card whose offline sales of one business day exceed its allowance (amount
or count), or that took more than its purses held, gets a reconciliation case and is frozen
with reason ``canteen_overspend`` until someone settles the case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard.modules.canteen import rules
from onecard.modules.canteen.models import Merchant, Pos, ReconCase, Sale
from onecard.modules.canteen.rules import CanteenReason
from onecard.modules.canteen.services import (
    KEY,
    audit_event,
    context_for,
    entry_split,
    get_or_raise,
    holder_balances,
    live_sales,
    offline_allowance,
    record_sale,
    spend_lines,
)
from onecard.platform.actors import Actor
from onecard.platform.approvals import services as approvals
from onecard.platform.cards import blacklist, lifecycle
from onecard.platform.cards.models import Card, CardStatus
from onecard.platform.clock import as_utc
from onecard.platform.errors import Conflict, InsufficientFunds
from onecard.platform.ledger.accounts import holder_account, tenant_account
from onecard.platform.ledger.operations import PURSE
from onecard.platform.ledger.posting import LineSpec, PostingRequest, post
from onecard.platform.tenants.models import Tenant

OFFLINE_CODE = "canteen.offline_meal"
FREEZE_REASON = "canteen_overspend"
MacVerifier = Callable[[str, bytes, str], bool]
"""``(device_id, message, mac) -> ok``: supplied by the key service, which holds device keys."""


@dataclass(frozen=True)
class OfflineSale:
    """One sale record as a POS uploaded it (``up/records``, type ``canteen.sale``)."""

    device_id: str
    epoch: int
    seq: int
    card_no: str
    list_fen: int
    amount_fen: int
    device_time: str
    mac: str
    period: str | None = None
    items: tuple[tuple[str, int], ...] = ()

    def mac_fields(self) -> dict[str, Any]:
        """The fields the POS's MAC covers (:func:`rules.mac_message`)."""
        return {
            "device_id": self.device_id,
            "epoch": self.epoch,
            "seq": self.seq,
            "card_no": self.card_no,
            "amount_fen": self.amount_fen,
            "list_fen": self.list_fen,
            "device_time": self.device_time,
        }


@dataclass(frozen=True)
class IngestReport:
    """What one upload changed."""

    recorded: int
    duplicates: int
    case_ids: tuple[int, ...]
    frozen_cards: tuple[str, ...]


def ingest_offline_sales(
    session: Session,
    pos: Pos,
    sales: Sequence[OfflineSale],
    *,
    verify_mac: MacVerifier,
    actor: Actor,
    now: datetime,
) -> IngestReport:
    """Record what ``pos`` sold offline; open cases and freeze cards that broke the policy.

    Idempotent per ``(device, epoch, seq)``. ``actor`` needs ``cards.freeze`` (the bridge's
    system actor has it).
    """
    recorded, duplicates, cases, frozen = 0, 0, set[int](), []
    for item in sales:
        if item.device_id != pos.device_id:
            raise Conflict("a record of another device", device_id=item.device_id)
        key = f"rec:{item.device_id}:{item.epoch}:{item.seq}"
        if session.scalar(select(Sale.id).where(Sale.key == key)) is not None:
            duplicates += 1
            continue
        sale = _record_one(session, pos, item, key, verify_mac, actor=actor, now=now)
        recorded += 1
        case = _apply_policy(session, sale, actor=actor, now=now)
        if case is not None:
            cases.add(case.id)
            if _freeze(session, sale.card_id, actor=actor, now=now):
                frozen.append(sale.card_no)
    return IngestReport(recorded, duplicates, tuple(sorted(cases)), tuple(frozen))


def _record_one(
    session: Session,
    pos: Pos,
    item: OfflineSale,
    key: str,
    verify_mac: MacVerifier,
    *,
    actor: Actor,
    now: datetime,
) -> Sale:
    occurred, flags = _instant(item.device_time, now)
    card = session.scalar(select(Card).where(Card.card_no == item.card_no))
    flags += [] if card is not None else ["unknown_card"]
    if card is not None and card.status != CardStatus.ACTIVE.value:
        flags.append("blacklisted_card")
    good_mac = verify_mac(item.device_id, rules.mac_message(item.mac_fields()), item.mac)
    flags += [] if good_mac else ["bad_mac"]
    ctx = context_for(session, pos, card.person_id if card else None, occurred)
    verdict = rules.Verdict(
        True,
        CanteenReason.OK,
        item.list_fen,
        item.list_fen - item.amount_fen,
        item.amount_fen,
        item.period or (ctx.period.key if ctx.period else None),
    )
    entry_id, split = None, {}
    if good_mac and item.amount_fen > 0:
        entry_id = _post_offline(session, pos, card, item, key, occurred, actor=actor, now=now)
        split = entry_split(session, entry_id)
    return record_sale(
        session,
        pos,
        card,
        ctx,
        verdict,
        split,
        key=key,
        entry_id=entry_id,
        items=item.items,
        source="offline",
        occurred_at=occurred,
        now=now,
        actor=actor,
        card_no=item.card_no,
        flags=flags,
        device_seq=item.seq,
    )


def _instant(device_time: str, now: datetime) -> tuple[datetime, list[str]]:
    try:
        when = datetime.fromisoformat(device_time)
    except ValueError:
        return now, ["bad_device_time"]
    if when.tzinfo is None:
        return now, ["bad_device_time"]
    return as_utc(when), []


def _post_offline(
    session: Session,
    pos: Pos,
    card: Card | None,
    item: OfflineSale,
    key: str,
    occurred: datetime,
    *,
    actor: Actor,
    now: datetime,
) -> int:
    """Post what happened: purses as far as they reach, the rest owed by the holder."""
    merchant_account = _merchant_account_id(session, pos)
    request = PostingRequest(
        code=OFFLINE_CODE,
        lines=_offline_lines(session, card, merchant_account, item.amount_fen),
        idempotency_key=f"canteen:{key}",
        occurred_at=occurred,
        source=KEY,
        reference={"card_no": item.card_no, "device_id": item.device_id, "seq": item.seq},
        intent={"key": key, "amount_fen": item.amount_fen},
    )
    try:
        with session.begin_nested():
            return post(session, request, actor=actor, now=now).id
    except InsufficientFunds:  # balances moved since we read them: everything to receivables
        lines = _offline_lines(session, None, merchant_account, item.amount_fen)
        retry = PostingRequest(**{**request.__dict__, "lines": lines})
        return post(session, retry, actor=actor, now=now).id


def _offline_lines(
    session: Session, card: Card | None, merchant_account_id: int, amount_fen: int
) -> tuple[LineSpec, ...]:
    receivables = tenant_account(session, "receivables")
    if card is None:
        return (LineSpec(merchant_account_id, -amount_fen), LineSpec(receivables.id, amount_fen))
    covered = _covered(session, card.person_id, amount_fen)
    lines = list(spend_lines(session, card.person_id, merchant_account_id, covered) or ())
    if lines:
        lines[0] = LineSpec(merchant_account_id, -amount_fen)
    else:
        lines = [LineSpec(merchant_account_id, -amount_fen)]
    if amount_fen > covered:
        lines.append(LineSpec(receivables.id, amount_fen - covered))
    return tuple(lines)


def _covered(session: Session, person_id: int, amount_fen: int) -> int:
    """The part of ``amount_fen`` the holder's subsidy and cash purses cover together."""
    found = holder_balances(session, person_id)
    return min(amount_fen, sum(max(fen, 0) for _aid, fen in found.values()))


def _merchant_account_id(session: Session, pos: Pos) -> int:
    return int(get_or_raise(session, Merchant, pos.merchant_id).account_id)


# --- the offline policy, across every POS ----------------------------------------------------


def _apply_policy(session: Session, sale: Sale, *, actor: Actor, now: datetime) -> ReconCase | None:
    """Open (or extend) a case when this sale breaks the card's offline policy."""
    if "bad_mac" in sale.flags:
        return _case(session, sale, "bad_mac", {"seq": sale.device_seq}, actor=actor, now=now)
    card = session.get(Card, sale.card_id) if sale.card_id else None
    day_sales = session.scalars(
        live_sales(session).where(
            Sale.card_no == sale.card_no,
            Sale.business_day == sale.business_day,
            Sale.source == "offline",
        )
    ).all()
    count, total = len(day_sales), sum(s.amount_fen for s in day_sales)
    breach = rules.allowance_breach(offline_allowance(session, card), count, total)
    receivable = sum(s.receivable_fen for s in day_sales)
    if breach is None and receivable == 0 and "unknown_card" not in sale.flags:
        return None
    detail = {
        "reason": breach.value if breach else "purse_shortfall",
        "count": count,
        "total_fen": total,
        "devices": sorted({s.pos_id for s in day_sales}),
    }
    case = _case(session, sale, "offline_overspend", detail, actor=actor, now=now)
    allowance = offline_allowance(session, card)
    case.over_fen = max(total - (allowance.amount_fen if allowance else 0), 0)
    case.receivable_fen = receivable
    case.sale_ids = sorted({*case.sale_ids, *(s.id for s in day_sales)})
    session.flush()
    return case


def _case(
    session: Session, sale: Sale, kind: str, detail: dict[str, Any], *, actor: Actor, now: datetime
) -> ReconCase:
    case = session.scalar(
        select(ReconCase).where(
            ReconCase.card_no == sale.card_no,
            ReconCase.business_day == sale.business_day,
            ReconCase.kind == kind,
        )
    )
    if case is None:
        case = ReconCase(
            kind=kind,
            card_no=sale.card_no,
            card_id=sale.card_id,
            person_id=sale.person_id,
            business_day=sale.business_day,
            status="open",
            sale_ids=[sale.id],
            detail=detail,
            opened_at=now,
        )
        session.add(case)
        session.flush()
        data = {"kind": kind, "card_no": sale.card_no, "detail": detail}
        audit_event(session, "canteen.case.opened", case.id, data, actor, now, obj="canteen_case")
    else:
        case.detail, case.status = detail, "open"
        case.sale_ids = sorted({*case.sale_ids, sale.id})
    session.flush()
    return case


def _freeze(session: Session, card_id: int | None, *, actor: Actor, now: datetime) -> bool:
    card = session.get(Card, card_id) if card_id else None
    if card is None or card.status != CardStatus.ACTIVE.value:
        return False
    lifecycle.freeze(session, card, actor=actor, now=now, reason=FREEZE_REASON)
    return True


# --- settling a case -------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseSettled:
    """What settling did: the collection entry, and the unfreeze (done or awaiting approval)."""

    case_id: int
    collected_entry_id: int | None
    unfreeze: approvals.Outcome | None


def open_cases(session: Session, card_no: str | None = None) -> list[ReconCase]:
    """Open reconciliation cases, oldest first (of one card when ``card_no`` is given)."""
    stmt = select(ReconCase).where(ReconCase.status == "open")
    if card_no is not None:
        stmt = stmt.where(ReconCase.card_no == card_no)
    return list(session.scalars(stmt.order_by(ReconCase.id)))


def settle_case(
    session: Session,
    tenant: Tenant,
    case: ReconCase,
    *,
    actor: Actor,
    now: datetime,
    note: str = "",
) -> CaseSettled:
    """Settle a case: collect what the holder owes from the purse (the holder topped up
    first), close the case, and, when it was the card's last open case, ask for the unfreeze
    through the platform's approvals (a blacklist removal always needs a second operator)."""
    actor.ensure("canteen.cases.settle")
    if case.status != "open":
        raise Conflict("the case is already settled", case_id=case.id)
    entry_id = _collect(session, case, actor=actor, now=now) if case.receivable_fen else None
    case.status, case.settled_at, case.settled_by = "settled", now, actor.id
    session.flush()
    data = {"entry_id": entry_id, "receivable_fen": case.receivable_fen, "note": note}
    audit_event(session, "canteen.case.settled", case.id, data, actor, now, obj="canteen_case")
    return CaseSettled(case.id, entry_id, _request_unfreeze(session, tenant, case, actor, now))


def _collect(session: Session, case: ReconCase, *, actor: Actor, now: datetime) -> int:
    """Dr the holder's purse, Cr receivables: raises ``InsufficientFunds`` before a top-up."""
    assert case.person_id is not None
    purse = holder_account(session, case.person_id, PURSE, now=now)
    receivables = tenant_account(session, "receivables")
    request = PostingRequest(
        code="canteen.overspend_collected",
        lines=(
            LineSpec(purse.id, case.receivable_fen),
            LineSpec(receivables.id, -case.receivable_fen),
        ),
        idempotency_key=f"canteen:case:{case.id}:collect",
        source=KEY,
        reference={"case_id": case.id},
    )
    return post(session, request, actor=actor, now=now).id


def _request_unfreeze(
    session: Session, tenant: Tenant, case: ReconCase, actor: Actor, now: datetime
) -> approvals.Outcome | None:
    card = session.get(Card, case.card_id) if case.card_id else None
    if card is None or card.status != CardStatus.FROZEN.value or open_cases(session, card.card_no):
        return None
    changes = blacklist.history(session, card.id)
    if not changes or changes[-1].reason != FREEZE_REASON:
        return None  # frozen for another reason: not ours to lift
    return approvals.submit(
        session,
        tenant,
        "card.unfreeze",
        {"card_id": card.id},
        actor=actor,
        now=now,
        summary=f"Unfreeze card {card.card_no}: canteen case {case.id} settled",
        idempotency_key=f"canteen:case:{case.id}:unfreeze",
    )


def receivable_of(session: Session, person_id: int) -> int:
    """What the holder owes from offline sales not yet collected (open cases)."""
    total = session.scalar(
        select(func.coalesce(func.sum(ReconCase.receivable_fen), 0)).where(
            ReconCase.person_id == person_id, ReconCase.status == "open"
        )
    )
    return int(total or 0)
