"""Ledger tables.

Lines use the signed-sum convention (debit > 0, credit < 0), so "an entry balances" is one
aggregate. ``ledger_balances`` caches the raw signed sum per account; the balance people see is
``raw * sign`` where ``sign`` is +1 for asset/expense and -1 for liability/income/equity.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from onecard.platform.db.base import Base, BigId, IdMixin
from onecard.platform.db.immutability import AppendOnly
from onecard.platform.db.tenancy import TenantScoped


class AccountType(StrEnum):
    """The accounting class of an account; decides the sign of its normal balance."""

    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    INCOME = "income"
    EXPENSE = "expense"

    @property
    def sign(self) -> int:
        """+1 when debits increase the normal balance, -1 when credits do."""
        return 1 if self in (AccountType.ASSET, AccountType.EXPENSE) else -1


class Account(IdMixin, TenantScoped, Base):
    """An account. Never deleted, only closed. ``kind`` names its role (``holder.purse``...)."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "code"),
        Index("ix_ledger_accounts_owner", "tenant_id", "owner_type", "owner_id", "kind"),
    )

    code: Mapped[str] = mapped_column(String(120))
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(10))
    kind: Mapped[str] = mapped_column(String(40))
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    owner_type: Mapped[str | None] = mapped_column(String(20))
    owner_id: Mapped[int | None] = mapped_column(BigId)
    # The normal balance may not fall below this; None means unbounded (clearing accounts).
    min_balance_fen: Mapped[int | None] = mapped_column(BigInteger)
    opened_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]

    @property
    def sign(self) -> int:
        """See :attr:`AccountType.sign`."""
        return AccountType(self.type).sign


class Balance(TenantScoped, Base):
    """Cached raw balance of one account, changed in the same transaction as its lines."""

    __tablename__ = "ledger_balances"

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("ledger_accounts.id"), primary_key=True
    )
    raw_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    line_count: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime]


class Entry(IdMixin, TenantScoped, AppendOnly, Base):
    """One balanced journal entry. Immutable; corrected only by a reversing entry."""

    __tablename__ = "ledger_entries"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),)

    idempotency_key: Mapped[str] = mapped_column(String(100))
    # SHA-256 of the canonical request: a replay with other content is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(60), index=True)
    memo: Mapped[str] = mapped_column(String(500), default="")
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime] = mapped_column(index=True)
    source: Mapped[str] = mapped_column(String(40))
    actor_type: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    reverses_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("ledger_entries.id"), unique=True
    )
    reference: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Line(IdMixin, TenantScoped, AppendOnly, Base):
    """One signed amount on one account within an entry (debit > 0, credit < 0)."""

    __tablename__ = "ledger_lines"
    __table_args__ = (
        CheckConstraint("amount_fen <> 0", name="nonzero"),
        Index("ix_ledger_lines_account", "account_id", "id"),
    )

    entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("ledger_entries.id"), index=True)
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("ledger_accounts.id"))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
