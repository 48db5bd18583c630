"""Canteen set-up: merchants (each with its liability account), POS terminals bound to platform
devices, meal periods per site, rules per identity class, offline allowances, menu items.

Every change needs ``canteen.manage`` and is audited; nothing commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.modules.canteen import rules
from onecard.modules.canteen.context import audit_event, forget_setup
from onecard.modules.canteen.models import (
    HolderRuleRow,
    MealPeriodRow,
    MenuItemRow,
    Merchant,
    OfflineAllowanceRow,
    Pos,
)
from onecard.modules.canteen.rules import Mode
from onecard.modules.canteen.services import KEY, MERCHANT_KIND
from onecard.platform.actors import Actor
from onecard.platform.cards.models import Card
from onecard.platform.devices.models import Device
from onecard.platform.errors import Conflict, ValidationFailed
from onecard.platform.ledger.accounts import AccountTemplate, open_account
from onecard.platform.ledger.models import AccountType
from onecard.platform.tenants.models import Site

MERCHANT_ACCOUNT = AccountTemplate(
    MERCHANT_KIND, AccountType.LIABILITY, "Liabilities:Merchants:{owner_id}", "Merchant", None
)


def create_merchant(
    session: Session, code: str, name: str, site: Site, *, actor: Actor, now: datetime
) -> Merchant:
    """Add a merchant at ``site`` with its own liability account (what the tenant owes it)."""
    actor.ensure("canteen.manage")
    if session.scalar(select(Merchant.id).where(Merchant.code == code)) is not None:
        raise Conflict(f"merchant {code} already exists", field="code")
    account = open_account(
        session,
        MERCHANT_ACCOUNT,
        now=now,
        code=f"Liabilities:Merchants:Canteen:{code}",
        name=f"Canteen merchant {name}",
    )
    merchant = Merchant(
        code=code, name=name, site_id=site.id, account_id=account.id, created_at=now
    )
    session.add(merchant)
    session.flush()
    account.owner_type, account.owner_id = "canteen_merchant", merchant.id
    audit_event(session, "canteen.merchant.created", merchant.id, {"code": code}, actor, now)
    return merchant


def add_pos(
    session: Session,
    merchant: Merchant,
    device: Device,
    *,
    mode: Mode,
    actor: Actor,
    now: datetime,
    fixed_prices: dict[str, int] | None = None,
    offline_enabled: bool = True,
) -> Pos:
    """Bind a platform device of kind ``pos`` (module ``canteen``) to ``merchant``."""
    actor.ensure("canteen.manage")
    if device.kind != "pos" or device.module != KEY:
        raise ValidationFailed("a canteen POS must be a 'pos' device of module 'canteen'")
    if device.site_id not in (None, merchant.site_id):
        raise ValidationFailed("the POS and its merchant must be at the same site")
    prices = dict(fixed_prices or {})
    if mode is Mode.FIXED and not prices:
        raise ValidationFailed("a fixed-amount POS needs a price per meal period")
    pos = Pos(
        device_pk=device.id,
        device_id=device.device_id,
        merchant_id=merchant.id,
        mode=mode.value,
        fixed_prices=prices,
        offline_enabled=offline_enabled,
        created_at=now,
    )
    session.add(pos)
    session.flush()
    audit_event(session, "canteen.pos.added", pos.id, {"device": device.device_id}, actor, now)
    return pos


def set_meal_periods(
    session: Session,
    site: Site,
    periods: Sequence[rules.MealPeriod],
    *,
    actor: Actor,
    now: datetime,
) -> list[MealPeriodRow]:
    """Replace the meal periods of ``site`` (wall times in the site's zone)."""
    actor.ensure("canteen.manage")
    for row in session.scalars(select(MealPeriodRow).where(MealPeriodRow.site_id == site.id)):
        session.delete(row)
    session.flush()
    rows = [
        MealPeriodRow(site_id=site.id, key=p.key, starts=_hhmm(p.starts), ends=_hhmm(p.ends))
        for p in periods
    ]
    session.add_all(rows)
    session.flush()
    data = {"periods": [[r.key, r.starts, r.ends] for r in rows]}
    audit_event(session, "canteen.meal_periods.set", site.id, data, actor, now, obj="site")
    forget_setup(session)  # a memo of this transaction must not outlive the change
    return rows


def set_rule(
    session: Session,
    identity_class: str,
    rule: rules.HolderRule,
    *,
    actor: Actor,
    now: datetime,
    offline: rules.Allowance | None = None,
) -> HolderRuleRow:
    """Set discount, limits, PIN threshold and offline allowance for an identity class."""
    actor.ensure("canteen.manage")
    if not 0 < rule.rate_bp <= rules.FULL_RATE_BP:
        raise ValidationFailed("rate_bp must be between 1 and 10000", field="rate_bp")
    row = session.scalar(
        select(HolderRuleRow).where(HolderRuleRow.identity_class == identity_class)
    )
    if row is None:
        row = HolderRuleRow(identity_class=identity_class, updated_at=now)
        session.add(row)
    row.rate_bp, row.meals_per_period = rule.rate_bp, rule.meals_per_period
    row.per_meal_limit_fen, row.per_day_limit_fen = rule.per_meal_limit_fen, rule.per_day_limit_fen
    row.pin_threshold_fen, row.updated_at = rule.pin_threshold_fen, now
    row.offline_amount_fen = offline.amount_fen if offline else 0
    row.offline_count = offline.count if offline else 0
    session.flush()
    data = {"identity_class": identity_class, "rule": rule.__dict__, "offline": offline}
    audit_event(session, "canteen.rule.set", row.id, data, actor, now, obj="canteen_rule")
    forget_setup(session)
    return row


def set_card_allowance(
    session: Session, card: Card, allowance: rules.Allowance, *, actor: Actor, now: datetime
) -> OfflineAllowanceRow:
    """Override the daily offline allowance of one card."""
    actor.ensure("canteen.manage")
    row = session.scalar(select(OfflineAllowanceRow).where(OfflineAllowanceRow.card_id == card.id))
    if row is None:
        row = OfflineAllowanceRow(card_id=card.id, amount_fen=0, count=0, updated_at=now)
        session.add(row)
    row.amount_fen, row.count, row.updated_at = allowance.amount_fen, allowance.count, now
    session.flush()
    data = {"card_id": card.id, "amount_fen": allowance.amount_fen, "count": allowance.count}
    audit_event(session, "canteen.allowance.set", row.id, data, actor, now, obj="card")
    return row


def add_menu_item(
    session: Session,
    merchant: Merchant,
    code: str,
    name: str,
    price_fen: int,
    *,
    actor: Actor,
    now: datetime,
) -> MenuItemRow:
    """Add a priced dish to a merchant's menu."""
    actor.ensure("canteen.manage")
    if isinstance(price_fen, bool) or not 0 < price_fen <= rules.MAX_SALE_FEN:
        raise ValidationFailed("price_fen out of range", field="price_fen")
    item = MenuItemRow(merchant_id=merchant.id, code=code, name=name, price_fen=price_fen)
    session.add(item)
    session.flush()
    data = {"merchant_id": merchant.id, "code": code, "price_fen": price_fen}
    audit_event(session, "canteen.menu.item_added", item.id, data, actor, now, obj="menu_item")
    return item


def _hhmm(t: time) -> str:
    return t.strftime("%H:%M")
