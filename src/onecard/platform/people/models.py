"""The person table."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, deferred, mapped_column

from onecard.platform.db.base import Base, BigId, IdMixin
from onecard.platform.db.tenancy import TenantScoped

IDENTITY_CLASSES = ("staff", "student", "visitor", "elderly", "contractor", "resident", "other")


class Person(IdMixin, TenantScoped, Base):
    """A card holder. ``person_no`` is unique per tenant (staff or student number)."""

    __tablename__ = "people"
    __table_args__ = (
        UniqueConstraint("tenant_id", "person_no"),
        Index("ix_people_tenant_name", "tenant_id", "name"),
    )

    person_no: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(100))
    identity_class: Mapped[str] = mapped_column(String(20))
    org_unit_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("org_units.id"), index=True)
    phone: Mapped[str | None] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(200))
    valid_from: Mapped[date | None] = mapped_column(Date)
    valid_until: Mapped[date | None] = mapped_column(Date)
    photo: Mapped[bytes | None] = deferred(mapped_column(LargeBinary))
    photo_type: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # People are never removed from the database: their ledger history must stay whole.
    deleted_at: Mapped[datetime | None]
