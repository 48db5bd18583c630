"""The approval request table (a workflow object; the audit trail keeps the facts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from onecard.platform.db.base import Base, BigId, IdMixin
from onecard.platform.db.tenancy import TenantScoped


class Approval(IdMixin, TenantScoped, Base):
    """An action waiting for a second operator: ``pending`` → ``approved`` | ``rejected``."""

    __tablename__ = "approvals"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),)

    kind: Mapped[str] = mapped_column(String(40), index=True)
    status: Mapped[str] = mapped_column(String(10), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    summary: Mapped[str] = mapped_column(String(300))
    amount_fen: Mapped[int | None] = mapped_column(BigInteger)
    idempotency_key: Mapped[str | None] = mapped_column(String(100))
    requested_by: Mapped[int] = mapped_column(BigId)
    requested_by_name: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime]
    decided_by: Mapped[int | None] = mapped_column(BigId)
    decided_by_name: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None]
    decision_note: Mapped[str] = mapped_column(String(300), default="")
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
