"""What a canteen decision needs: merchant, site zone, meal period, business day, the holder's
rule, usage and offline allowance, the price; and the module's small lookup helpers.

Read-only: nothing here writes, except :func:`audit_event`, which appends the audit event of a
change the caller makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from onecard.modules.canteen import rules
from onecard.modules.canteen.models import (
    HolderRuleRow,
    MealPeriodRow,
    MenuItemRow,
    Merchant,
    OfflineAllowanceRow,
    Pos,
    Refund,
    Sale,
)
from onecard.modules.canteen.rules import CanteenReason, Mode
from onecard.platform.actors import Actor
from onecard.platform.audit.record import record
from onecard.platform.cards.models import Card, CardStatus
from onecard.platform.db.tenancy import get_scoped
from onecard.platform.errors import NotFound
from onecard.platform.people.models import Person
from onecard.platform.tenants.models import Site

DEFAULT_RULE = rules.HolderRule()


@dataclass(frozen=True)
class SaleContext:
    """Everything the rules need about one holder at one POS at one instant."""

    merchant: Merchant
    zone: str
    period: rules.MealPeriod | None
    day: date
    rule: rules.HolderRule
    usage: rules.Usage


def context_for(session: Session, pos: Pos, person_id: int | None, at: datetime) -> SaleContext:
    """Merchant, site zone, meal period, business day, holder rule and usage at ``at``."""
    merchant = get_or_raise(session, Merchant, pos.merchant_id)
    site = get_or_raise(session, Site, merchant.site_id)
    period = rules.meal_period_at(periods_of(session, site.id), at, site.timezone)
    day = (
        rules.period_day(period, at, site.timezone)
        if period
        else rules.local_day(at, site.timezone)
    )
    rule = holder_rule(session, person_id)
    usage = usage_of(session, person_id, day, period.key if period else None)
    return SaleContext(merchant, site.timezone, period, day, rule, usage)


_MEMO = "onecard.canteen.setup_rows"


def _memo(session: Session, name: str) -> dict[Any, Any]:
    """A cache of set-up rows (periods, rules) for one transaction: a bridge handles a chunk
    of taps in one transaction, and every tap of it reads the same few set-up rows. Emptied
    when the transaction ends (`_forget`), so a change committed since is always seen."""
    memo: dict[str, dict[Any, Any]] = session.info.setdefault(_MEMO, {})
    return memo.setdefault(name, {})


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def forget_setup(session: Session) -> None:
    """Drop the transaction's memo of set-up rows (also called by the set-up services)."""
    session.info.pop(_MEMO, None)


def periods_of(session: Session, site_id: int) -> list[rules.MealPeriod]:
    """The meal periods of a site, earliest first (read once per session)."""
    memo = _memo(session, "periods")
    if site_id not in memo:
        memo[site_id] = _read_periods(session, site_id)
    return list(memo[site_id])


def _read_periods(session: Session, site_id: int) -> list[rules.MealPeriod]:
    rows = session.scalars(
        select(MealPeriodRow).where(MealPeriodRow.site_id == site_id).order_by(MealPeriodRow.starts)
    )
    return [
        rules.MealPeriod(r.key, time.fromisoformat(r.starts), time.fromisoformat(r.ends))
        for r in rows
    ]


def holder_rule(session: Session, person_id: int | None) -> rules.HolderRule:
    """The rule of the person's identity class (full price, no limits when none is set)."""
    row = _rule_row(session, person_id)
    if row is None:
        return DEFAULT_RULE
    return rules.HolderRule(
        rate_bp=row.rate_bp,
        per_meal_limit_fen=row.per_meal_limit_fen,
        per_day_limit_fen=row.per_day_limit_fen,
        meals_per_period=row.meals_per_period,
        pin_threshold_fen=row.pin_threshold_fen,
    )


def offline_allowance(session: Session, card: Card | None) -> rules.Allowance | None:
    """The card's daily offline allowance: its own override, else its class's; ``None``: none."""
    if card is None:
        return None
    own = session.scalar(select(OfflineAllowanceRow).where(OfflineAllowanceRow.card_id == card.id))
    if own is not None:
        return rules.Allowance(own.amount_fen, own.count)
    row = _rule_row(session, card.person_id)
    if row is None or row.offline_count <= 0:
        return None
    return rules.Allowance(row.offline_amount_fen, row.offline_count)


def _rule_row(session: Session, person_id: int | None) -> HolderRuleRow | None:
    if person_id is None:
        return None
    cls = session.scalar(select(Person.identity_class).where(Person.id == person_id))
    memo = _memo(session, "rules")
    if cls not in memo:
        memo[cls] = session.scalar(select(HolderRuleRow).where(HolderRuleRow.identity_class == cls))
    found: HolderRuleRow | None = memo[cls]
    return found


def live_sales(session: Session) -> Any:
    """``select(Sale)`` of sales that were not refunded."""
    refunded = select(Refund.sale_id)
    return select(Sale).where(Sale.id.not_in(refunded))


def usage_of(session: Session, person_id: int | None, day: date, period: str | None) -> rules.Usage:
    """Count and amount of the holder's unrefunded sales on ``day`` and in ``period`` of it."""
    if person_id is None:
        return rules.Usage()
    sales = session.scalars(
        live_sales(session).where(Sale.person_id == person_id, Sale.business_day == day)
    ).all()
    in_period = [s for s in sales if period is not None and s.period == period]
    return rules.Usage(
        period_count=len(in_period),
        period_fen=sum(s.amount_fen for s in in_period),
        day_count=len(sales),
        day_fen=sum(s.amount_fen for s in sales),
    )


def price_of(
    session: Session,
    pos: Pos,
    period: rules.MealPeriod | None,
    *,
    list_fen: int | None,
    items: Sequence[tuple[str, int]] = (),
) -> int | None:
    """The list price of a sale by the POS's mode; ``None`` when it cannot be priced."""
    mode = Mode(pos.mode)
    if mode is Mode.FIXED:
        return (
            int(pos.fixed_prices[period.key]) if period and period.key in pos.fixed_prices else None
        )
    if mode is Mode.FREE:
        return list_fen
    if not items:
        return list_fen  # the POS priced the dishes itself (online tap: only the total travels)
    prices = dict(
        session.execute(
            select(MenuItemRow.code, MenuItemRow.price_fen).where(
                MenuItemRow.merchant_id == pos.merchant_id, MenuItemRow.active.is_(True)
            )
        ).all()
    )
    return rules.menu_total(prices, items)


def card_reason(card: Card, now: datetime) -> CanteenReason | None:
    """The card is blacklisted (not active) or expired: no sale, online or offline."""
    if card.status != CardStatus.ACTIVE.value:
        return CanteenReason.CARD_BLACKLISTED
    if card.expires_at is not None and card.expires_at <= now:
        return CanteenReason.CARD_BLACKLISTED
    return None


def get_or_raise(session: Session, cls: type[Any], ident: int) -> Any:
    """The tenant's ``cls`` row ``ident``; :class:`NotFound` otherwise."""
    obj = get_scoped(session, cls, ident)
    if obj is None:
        raise NotFound(f"{cls.__name__} {ident} not found")
    return obj


def audit_event(
    session: Session,
    type_: str,
    object_id: object,
    data: dict[str, Any],
    actor: Actor,
    now: datetime,
    *,
    obj: str = "canteen_merchant",
) -> None:
    """Append the audit event of a canteen change, in the caller's transaction."""
    record(session, type_, actor=actor, now=now, object_type=obj, object_id=object_id, data=data)
