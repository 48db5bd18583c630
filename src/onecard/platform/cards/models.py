"""Tables of cards and of the versioned card blacklist."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from onecard.platform.db.base import Base, BigId, IdMixin
from onecard.platform.db.immutability import AppendOnly
from onecard.platform.db.tenancy import TenantScoped


class CardKind(StrEnum):
    """The media a credential lives on."""

    CPU = "cpu"  # contact/contactless CPU card with a PBOC-style purse
    M1 = "m1"  # MIFARE Classic sectors
    ID = "id"  # UID only
    QR = "qr"
    MOBILE = "mobile"


class CardStatus(StrEnum):
    """States of the card state machine (see ``cards.lifecycle``)."""

    ACTIVE = "active"
    LOST = "lost"
    FROZEN = "frozen"
    REPLACED = "replaced"
    RETURNED = "returned"
    EXPIRED = "expired"


class Card(IdMixin, TenantScoped, Base):
    """A credential held by one person. ``card_no`` is the printed number, unique per tenant."""

    __tablename__ = "cards"
    __table_args__ = (
        UniqueConstraint("tenant_id", "card_no"),
        Index("ix_cards_tenant_uid", "tenant_id", "uid"),
    )

    card_no: Mapped[str] = mapped_column(String(32))
    person_id: Mapped[int] = mapped_column(BigId, ForeignKey("people.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    uid: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(10))
    deposit_fen: Mapped[int] = mapped_column(default=0)
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    status_changed_at: Mapped[datetime]
    replaced_by_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("cards.id"))


class BlacklistChange(IdMixin, TenantScoped, AppendOnly, Base):
    """One version of a tenant's card blacklist: a card added to it or removed from it.

    ``version`` increases by one per change within a tenant; devices receive the changes after
    the version they hold as a delta and confirm with a receipt.
    """

    __tablename__ = "card_blacklist_changes"
    __table_args__ = (UniqueConstraint("tenant_id", "version"),)

    version: Mapped[int]
    card_id: Mapped[int] = mapped_column(BigId, ForeignKey("cards.id"), index=True)
    card_no: Mapped[str] = mapped_column(String(32))
    op: Mapped[str] = mapped_column(String(6))  # "add" | "remove"
    reason: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime]
