"""Per-tenant gap-free counters (list versions, sequence numbers) under a row lock."""

from __future__ import annotations

from sqlalchemy import String, UniqueConstraint, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from onecard.platform.db.base import Base, IdMixin
from onecard.platform.db.tenancy import TenantScoped, require_tenant_id


class Counter(IdMixin, TenantScoped, Base):
    """The last value handed out for one named sequence of one tenant."""

    __tablename__ = "counters"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    name: Mapped[str] = mapped_column(String(60))
    value: Mapped[int] = mapped_column(default=0)


def next_value(session: Session, name: str) -> int:
    """Increment and return the counter ``name`` of the tenant in scope.

    The increment is one atomic UPDATE, so the row stays locked until the caller's transaction
    ends: numbers are gap-free and ordered by commit. The first use creates the row.
    """
    tid = require_tenant_id()
    stmt = (
        update(Counter)
        .where(Counter.tenant_id == tid, Counter.name == name)
        .values(value=Counter.value + 1)
        .execution_options(synchronize_session=False)
    )
    if session.execute(stmt).rowcount == 0:  # type: ignore[attr-defined]
        try:
            with session.begin_nested():
                session.add(Counter(tenant_id=tid, name=name, value=0))
        except IntegrityError:
            pass  # a concurrent transaction created it; the UPDATE below waits for it
        session.execute(stmt)
    value = session.scalar(select(Counter.value).where(Counter.name == name))
    assert value is not None
    return value


def current_value(session: Session, name: str) -> int:
    """The last value handed out for ``name`` (0 when none yet)."""
    value = session.scalar(select(Counter.value).where(Counter.name == name))
    return value or 0
