"""Tables of the platform's card-key side: layout plans, online loads, clearing batches and
clearing records (epurse.md §7.1, §12). No table holds key material: plans name applications
and owners, loads and records hold amounts, counters, serials and the card's TAC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from onecard.platform.db.base import Base, BigId, IdMixin
from onecard.platform.db.immutability import AppendOnly
from onecard.platform.db.tenancy import TenantScoped


class CardLayoutPlanRow(IdMixin, TenantScoped, Base):
    """A tenant's card layout plan (`onecard.keys.layout.CardLayoutPlan.to_dict`), versioned."""

    __tablename__ = "card_layout_plans"
    __table_args__ = (UniqueConstraint("tenant_id"),)

    plan: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int]
    updated_at: Mapped[datetime]


class CardLoad(IdMixin, TenantScoped, AppendOnly, Base):
    """One authorised online load (圈存), unique by the card's ASN and online counter.

    The host date/time and serial are kept so that a retried request gets the same MAC2 (the
    HSM recomputes it; the MAC itself is not stored).
    """

    __tablename__ = "card_loads"
    __table_args__ = (UniqueConstraint("tenant_id", "asn", "online_counter"),)

    card_id: Mapped[int] = mapped_column(BigId, ForeignKey("cards.id"), index=True)
    asn: Mapped[str] = mapped_column(String(20))
    online_counter: Mapped[int]
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    balance_before_fen: Mapped[int] = mapped_column(BigInteger)
    terminal: Mapped[str] = mapped_column(String(12))
    key_version: Mapped[int]
    request_hash: Mapped[str] = mapped_column(String(64))
    host_date: Mapped[str] = mapped_column(String(8))
    host_time: Mapped[str] = mapped_column(String(6))
    host_serial: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(20))
    entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("ledger_entries.id"))
    created_at: Mapped[datetime]


class ClearingBatch(IdMixin, TenantScoped, AppendOnly, Base):
    """One submission of clearing records and the verifier's report on it (a receipt)."""

    __tablename__ = "clearing_batches"

    merchant_account_id: Mapped[int] = mapped_column(BigId, ForeignKey("ledger_accounts.id"))
    record_count: Mapped[int]
    counts: Mapped[dict[str, Any]] = mapped_column(JSON)
    problems: Mapped[dict[str, Any]] = mapped_column(JSON)
    actor_type: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    submitted_at: Mapped[datetime]


class ClearingRecordRow(IdMixin, TenantScoped, AppendOnly, Base):
    """An accepted clearing record (TAC verified): a fact, classified ``ok`` or ``gap``.

    Records whose TAC fails and duplicates are reported in their batch, not stored here, so a
    genuine record that arrives after a corrupted copy is still accepted.
    """

    __tablename__ = "clearing_records"
    __table_args__ = (
        UniqueConstraint("tenant_id", "asn", "counter", "kind"),
        Index("ix_clearing_records_terminal", "tenant_id", "terminal", "serial"),
    )

    batch_id: Mapped[int] = mapped_column(BigId, ForeignKey("clearing_batches.id"), index=True)
    asn: Mapped[str] = mapped_column(String(20))
    counter: Mapped[int]
    kind: Mapped[str] = mapped_column(String(8))
    terminal: Mapped[str] = mapped_column(String(12))
    serial: Mapped[int] = mapped_column(BigInteger)
    ttype: Mapped[int]
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    balance_before_fen: Mapped[int] = mapped_column(BigInteger)
    key_version: Mapped[int]
    occurred: Mapped[str] = mapped_column(String(14))  # terminal's BCD date ‖ time, as text
    raw: Mapped[bytes] = mapped_column(LargeBinary(80))
    classification: Mapped[str] = mapped_column(String(10))
    entry_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("ledger_entries.id"))
    recorded_at: Mapped[datetime]
