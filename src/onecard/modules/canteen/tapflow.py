"""The canteen's part of the platform's online tap flow (ARCHITECTURE §6).

:func:`authorize_tap` only reads: it decides with the same rules as :func:`services.sell` and
proposes one subsidy-first posting that the platform posts in the tap's transaction.
:func:`record_tap_sale` records the canteen sale of a posted tap (idempotent by the tap).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.modules.canteen import rules
from onecard.modules.canteen.context import SaleContext, context_for, get_or_raise, price_of
from onecard.modules.canteen.models import Pos, Sale
from onecard.modules.canteen.rules import CanteenReason, Mode
from onecard.modules.canteen.services import KEY, MEAL_CODE, entry_split, record_sale, spend_lines
from onecard.platform.actors import Actor
from onecard.platform.cards.models import Card
from onecard.platform.db.tenancy import get_scoped, require_tenant_id
from onecard.platform.devices.taps import TapDecision, TapRequest
from onecard.platform.ledger.models import Entry
from onecard.platform.ledger.posting import PostingRequest

POSTING_KEY_PREFIX = "canteen:tap:"


def posting_key(device_id: str, req_id: str) -> str:
    """The idempotency key of the posting an online tap makes."""
    return f"{POSTING_KEY_PREFIX}{device_id}:{req_id}"


def sale_key(device_id: str, req_id: str) -> str:
    """The key of the online sale a tap records (one per ``(device, req_id)``)."""
    return f"tap:{device_id}:{req_id}"


def pos_for_device(session: Session, device_id: str) -> Pos | None:
    """The active POS bound to the platform device ``device_id``."""
    return session.scalar(select(Pos).where(Pos.device_id == device_id, Pos.active.is_(True)))


def authorize_tap(session: Session, tap: TapRequest) -> TapDecision | None:
    """The canteen's opinion on an online tap (reads only; the platform posts the proposal).

    ``None`` when the device is not a canteen terminal. The amount on the wire is the fixed
    price's stand-in in fixed mode (ignored), the keyed-in amount in free mode, and the POS's
    menu total in menu mode. A PIN counts as verified only when the tap says so.
    """
    if tap.module != KEY:
        return None
    pos = pos_for_device(session, tap.device_id)
    card = get_scoped(session, Card, tap.card_id)
    if pos is None or card is None:
        return _tap_deny(CanteenReason.AMOUNT_INVALID, "pos_not_configured")
    ctx = context_for(session, pos, card.person_id, tap.now)
    _remember(session, tap, ctx)
    list_fen = price_of(session, pos, ctx.period, list_fen=tap.amount_fen)
    verdict = rules.decide_sale(
        ctx.rule,
        ctx.usage,
        mode=Mode(pos.mode),
        list_fen=list_fen,
        period=ctx.period,
        pin_verified=bool(getattr(tap, "pin_verified", False)),
    )
    if not verdict.allow:
        return _tap_deny(verdict.reason)
    lines = spend_lines(session, card.person_id, ctx.merchant.account_id, verdict.amount_fen)
    if lines is None:
        return _tap_deny(CanteenReason.INSUFFICIENT_FUNDS)
    request = PostingRequest(
        code=MEAL_CODE,
        lines=lines,
        idempotency_key=posting_key(tap.device_id, tap.req_id),
        occurred_at=tap.now,
        source=KEY,
        reference=_tap_reference(pos, card, ctx, verdict),
    )
    return TapDecision(True, "OK", _display(verdict), (request,), CanteenReason.OK.value, KEY)


def _tap_reference(
    pos: Pos, card: Card, ctx: SaleContext, verdict: rules.Verdict
) -> dict[str, Any]:
    return {
        "pos_id": pos.id,
        "card_id": card.id,
        "person_id": card.person_id,
        "period": verdict.period,
        "business_day": ctx.day.isoformat(),
        "list_fen": verdict.list_fen,
        "discount_fen": verdict.discount_fen,
        "amount_fen": verdict.amount_fen,
    }


def record_tap_sale(session: Session, tap: TapRequest, entry_id: int, *, now: datetime) -> Sale:
    """Record the sale of a tap the platform allowed and posted (idempotent by the tap)."""
    key = sale_key(tap.device_id, tap.req_id)
    earlier = session.scalar(select(Sale).where(Sale.key == key))
    if earlier is not None:
        return earlier
    entry = get_or_raise(session, Entry, entry_id)
    ref = entry.reference
    pos = get_or_raise(session, Pos, int(ref["pos_id"]))
    card = get_or_raise(session, Card, int(ref["card_id"]))
    ctx = _recall(session, tap) or context_for(session, pos, card.person_id, entry.occurred_at)
    verdict = rules.Verdict(
        True,
        CanteenReason.OK,
        int(ref["list_fen"]),
        int(ref["discount_fen"]),
        int(ref["amount_fen"]),
        ref.get("period"),
    )
    actor = Actor(type="device", id=tap.device_id, tenant_id=require_tenant_id())
    return record_sale(
        session,
        pos,
        card,
        ctx,
        verdict,
        entry_split(session, entry.id),
        key=key,
        entry_id=entry.id,
        items=(),
        source="online",
        occurred_at=entry.occurred_at,
        now=now,
        actor=actor,
    )


_CONTEXTS = "onecard.canteen.tap_contexts"


def _remember(session: Session, tap: TapRequest, ctx: SaleContext) -> None:
    """Keep the context `authorize_tap` computed for `record_tap_sale` of the same tap (same
    session and transaction: reading it twice cost a third of a sale's time)."""
    session.info.setdefault(_CONTEXTS, {})[(tap.device_id, tap.req_id)] = ctx


def _recall(session: Session, tap: TapRequest) -> SaleContext | None:
    memo: dict[tuple[str, str], SaleContext] = session.info.get(_CONTEXTS, {})
    return memo.pop((tap.device_id, tap.req_id), None)


def _tap_deny(reason: CanteenReason, detail: str = "") -> TapDecision:
    code = rules.PROTOCOL_REASON[reason].value
    return TapDecision(False, code, "", (), detail or reason.value, KEY)


def _display(verdict: rules.Verdict) -> str:
    whole, cents = divmod(verdict.amount_fen, 100)
    return f"-{whole}.{cents:02d}"
