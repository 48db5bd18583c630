"""The tenant's versioned card blacklist: what devices must refuse.

Each change is one :class:`BlacklistChange` row with the next version of the tenant's counter.
A device holding version ``v`` needs the changes ``(v, current]`` (a delta) or, when too far
behind, the snapshot of cards whose last change is an ``add``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard.platform.cards.models import BlacklistChange, Card
from onecard.platform.db.counters import current_value, next_value

LIST_NAME = "list.card_blacklist"


def append_change(session: Session, card: Card, *, add: bool, reason: str, now: datetime) -> int:
    """Record that ``card`` joins (``add``) or leaves the blacklist; return the new version."""
    version = next_value(session, LIST_NAME)
    session.add(
        BlacklistChange(
            version=version,
            card_id=card.id,
            card_no=card.card_no,
            op="add" if add else "remove",
            reason=reason,
            created_at=now,
        )
    )
    return version


def current_version(session: Session) -> int:
    """The tenant's latest blacklist version (0 before the first change)."""
    return current_value(session, LIST_NAME)


@dataclass(frozen=True)
class Delta:
    """Changes after ``from_version`` up to ``to_version``."""

    from_version: int
    to_version: int
    add: tuple[str, ...]
    remove: tuple[str, ...]


def delta(session: Session, from_version: int, *, limit: int = 10_000) -> Delta:
    """The net changes after ``from_version`` (at most ``limit`` versions)."""
    rows = session.execute(
        select(BlacklistChange.version, BlacklistChange.card_no, BlacklistChange.op)
        .where(BlacklistChange.version > from_version)
        .order_by(BlacklistChange.version)
        .limit(limit)
    ).all()
    last: dict[str, str] = {}
    for _version, card_no, op in rows:
        last[card_no] = op
    to = rows[-1][0] if rows else from_version
    return Delta(
        from_version,
        to,
        tuple(sorted(c for c, op in last.items() if op == "add")),
        tuple(sorted(c for c, op in last.items() if op == "remove")),
    )


def snapshot(session: Session) -> tuple[int, list[str]]:
    """``(version, sorted card numbers)`` currently on the blacklist."""
    latest = (
        select(BlacklistChange.card_no, func.max(BlacklistChange.version).label("v"))
        .group_by(BlacklistChange.card_no)
        .subquery()
    )
    rows = session.scalars(
        select(BlacklistChange.card_no)
        .join(
            latest,
            (latest.c.card_no == BlacklistChange.card_no) & (latest.c.v == BlacklistChange.version),
        )
        .where(BlacklistChange.op == "add")
        .order_by(BlacklistChange.card_no)
    )
    return current_version(session), list(rows)


def history(session: Session, card_id: int) -> list[BlacklistChange]:
    """All blacklist changes of one card, oldest first."""
    return list(
        session.scalars(
            select(BlacklistChange)
            .where(BlacklistChange.card_id == card_id)
            .order_by(BlacklistChange.version)
        )
    )
