"""Canteen tables (all ``canteen_*``): merchants, POS terminals, meal periods, holder rules,
menu items, sales and refunds (facts), offline allowances, reconciliation cases, settlements
with their merchant payouts.

A sale and a refund are facts: never updated, never deleted. A refund references its sale
(unique), so "is this sale refunded" is a join, not a flag that changes.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from onecard.platform.db.base import Base, BigId, IdMixin
from onecard.platform.db.immutability import AppendOnly
from onecard.platform.db.tenancy import TenantScoped


class Merchant(IdMixin, TenantScoped, Base):
    """A stall or canteen operator; the tenant owes it what holders spent there."""

    __tablename__ = "canteen_merchants"
    __table_args__ = (UniqueConstraint("tenant_id", "code"),)

    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    site_id: Mapped[int] = mapped_column(BigId, ForeignKey("sites.id"))
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("ledger_accounts.id"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]


class Pos(IdMixin, TenantScoped, Base):
    """A POS terminal: a platform device (kind ``pos``) bound to one merchant."""

    __tablename__ = "canteen_pos"
    __table_args__ = (UniqueConstraint("device_pk"),)

    device_pk: Mapped[int] = mapped_column(BigId, ForeignKey("devices.id"))
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    merchant_id: Mapped[int] = mapped_column(BigId, ForeignKey("canteen_merchants.id"))
    mode: Mapped[str] = mapped_column(String(10))
    fixed_prices: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # period -> fen
    offline_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]


class MealPeriodRow(IdMixin, TenantScoped, Base):
    """A meal period of a site: local ``HH:MM`` wall times, ``[starts, ends)``."""

    __tablename__ = "canteen_meal_periods"
    __table_args__ = (UniqueConstraint("tenant_id", "site_id", "key"),)

    site_id: Mapped[int] = mapped_column(BigId, ForeignKey("sites.id"))
    key: Mapped[str] = mapped_column(String(20))
    starts: Mapped[str] = mapped_column(String(5))
    ends: Mapped[str] = mapped_column(String(5))


class HolderRuleRow(IdMixin, TenantScoped, Base):
    """Discount, limits, PIN threshold and offline allowance of one identity class."""

    __tablename__ = "canteen_rules"
    __table_args__ = (UniqueConstraint("tenant_id", "identity_class"),)

    identity_class: Mapped[str] = mapped_column(String(20))
    rate_bp: Mapped[int] = mapped_column(Integer, default=10_000)
    per_meal_limit_fen: Mapped[int | None] = mapped_column(BigInteger)
    per_day_limit_fen: Mapped[int | None] = mapped_column(BigInteger)
    meals_per_period: Mapped[int] = mapped_column(Integer, default=1)
    pin_threshold_fen: Mapped[int | None] = mapped_column(BigInteger)
    offline_amount_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    offline_count: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime]


class OfflineAllowanceRow(IdMixin, TenantScoped, Base):
    """A per-card override of the identity class's daily offline allowance."""

    __tablename__ = "canteen_offline_allowances"
    __table_args__ = (UniqueConstraint("tenant_id", "card_id"),)

    card_id: Mapped[int] = mapped_column(BigId, ForeignKey("cards.id"))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime]


class MenuItemRow(IdMixin, TenantScoped, Base):
    """A priced dish of a merchant."""

    __tablename__ = "canteen_menu_items"
    __table_args__ = (UniqueConstraint("tenant_id", "merchant_id", "code"),)

    merchant_id: Mapped[int] = mapped_column(BigId, ForeignKey("canteen_merchants.id"))
    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    price_fen: Mapped[int] = mapped_column(BigInteger)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


PAID_FROM_ACCOUNTS = "accounts"  # the holder's platform purses (subsidy, cash, receivables)
PAID_FROM_CARD = "card_purse"  # the CPU card's own purse, proven by a cleared TAC


class Sale(IdMixin, TenantScoped, AppendOnly, Base):
    """One meal sold: online (decided by the server) or offline (decided by the POS).

    ``key`` makes every path idempotent: ``sell:<device>:<request id>`` and ``tap:<device>:
    <req_id>`` online, ``rec:<device record id>`` for an uploaded record (whose identity is
    ``(device, epoch, seq)``). ``receivable_fen`` is what an offline sale took beyond the
    purses. ``paid_from`` says whose purse paid; a card-purse sale links the clearing record
    whose verified TAC proves it (``clearing_record_id``) and the clearing entry.
    """

    __tablename__ = "canteen_sales"
    __table_args__ = (
        UniqueConstraint("tenant_id", "key"),
        UniqueConstraint("record_id"),
        Index("ix_canteen_sales_person_day", "tenant_id", "person_id", "business_day"),
        Index("ix_canteen_sales_merchant_day", "tenant_id", "merchant_id", "business_day"),
    )

    key: Mapped[str] = mapped_column(String(100))
    merchant_id: Mapped[int] = mapped_column(BigId, ForeignKey("canteen_merchants.id"))
    pos_id: Mapped[int] = mapped_column(BigId, ForeignKey("canteen_pos.id"))
    card_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("cards.id"))
    card_no: Mapped[str] = mapped_column(String(32))
    person_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("people.id"))
    mode: Mapped[str] = mapped_column(String(10))
    source: Mapped[str] = mapped_column(String(10))  # online | offline
    period: Mapped[str | None] = mapped_column(String(20))
    business_day: Mapped[date] = mapped_column(Date)
    list_fen: Mapped[int] = mapped_column(BigInteger)
    discount_fen: Mapped[int] = mapped_column(BigInteger)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    subsidy_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    purse_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    receivable_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    entry_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("ledger_entries.id"))
    items: Mapped[list[Any]] = mapped_column(JSON, default=list)
    flags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    device_seq: Mapped[int | None] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    actor_id: Mapped[str | None] = mapped_column(String(64))
    record_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("device_records.id"))
    paid_from: Mapped[str] = mapped_column(
        String(12), default=PAID_FROM_ACCOUNTS, server_default=PAID_FROM_ACCOUNTS
    )
    clearing_record_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("clearing_records.id"))


class Refund(IdMixin, TenantScoped, AppendOnly, Base):
    """The cashier's correction of a sale: a reversal entry, at most one per sale."""

    __tablename__ = "canteen_refunds"
    __table_args__ = (UniqueConstraint("sale_id"),)

    sale_id: Mapped[int] = mapped_column(BigId, ForeignKey("canteen_sales.id"))
    pos_id: Mapped[int] = mapped_column(BigId, ForeignKey("canteen_pos.id"))
    merchant_id: Mapped[int] = mapped_column(BigId, ForeignKey("canteen_merchants.id"))
    business_day: Mapped[date] = mapped_column(Date)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("ledger_entries.id"))
    reason: Mapped[str] = mapped_column(String(200))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]


class ReconCase(IdMixin, TenantScoped, Base):
    """An exception found in offline records that someone has to settle (one per card, day
    and kind; later records of the same day join it)."""

    __tablename__ = "canteen_recon_cases"
    __table_args__ = (UniqueConstraint("tenant_id", "card_no", "business_day", "kind"),)

    kind: Mapped[str] = mapped_column(String(30))  # offline_overspend | bad_mac | bad_tac
    card_no: Mapped[str] = mapped_column(String(32))
    card_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("cards.id"))
    person_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("people.id"))
    business_day: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(10))  # open | settled
    over_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    receivable_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    sale_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    opened_at: Mapped[datetime]
    settled_at: Mapped[datetime | None]
    settled_by: Mapped[str | None] = mapped_column(String(64))


class Settlement(IdMixin, TenantScoped, Base):
    """A merchant's daily statement with the three-way reconciliation and its exceptions, and
    the payout of what the ledger credited the merchant that day.

    ``payout_status``: ``None`` (not requested), ``awaiting_approval`` (above the tenant's
    four-eyes threshold), ``posted`` (``payout_entry_id``) or ``rejected``.
    """

    __tablename__ = "canteen_settlements"
    __table_args__ = (UniqueConstraint("tenant_id", "merchant_id", "business_day"),)

    merchant_id: Mapped[int] = mapped_column(BigId, ForeignKey("canteen_merchants.id"))
    business_day: Mapped[date] = mapped_column(Date)
    sales_count: Mapped[int] = mapped_column(Integer)
    gross_fen: Mapped[int] = mapped_column(BigInteger)
    refunds_fen: Mapped[int] = mapped_column(BigInteger)
    net_fen: Mapped[int] = mapped_column(BigInteger)
    ledger_fen: Mapped[int] = mapped_column(BigInteger)
    pos_totals: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    exceptions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(12))  # balanced | exceptions
    created_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(64))
    payout_status: Mapped[str | None] = mapped_column(String(20))
    payout_fen: Mapped[int | None] = mapped_column(BigInteger)
    payout_entry_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("ledger_entries.id"))
    payout_requested_by: Mapped[str | None] = mapped_column(String(64))
    payout_decided_by: Mapped[str | None] = mapped_column(String(64))
    payout_at: Mapped[datetime | None]
