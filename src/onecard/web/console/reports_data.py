"""Report queries: takings per merchant account, top-ups by channel, subsidy use, balances.

Periods are cut in local time (the display zone) into buckets — shifts (班报: three fixed
eight-hour shifts 00-08, 08-16, 16-24), days (日报), months (月报) or years (年报) — and each
report is one aggregate query that labels every line with its bucket through a ``CASE`` over the
bucket boundaries, so the database returns at most buckets × series rows however many entries
there are. Amounts are integer fen.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session

from onecard.platform.ledger.models import Account, Balance, Entry, Line

GRAINS = ("shift", "day", "month", "year")
SHIFT_STARTS = (0, 8, 16)
MAX_BUCKETS = 400
LIABILITY_KINDS = ("holder.purse", "holder.subsidy", "holder.deposit", "card_float")


@dataclass(frozen=True)
class Bucket:
    """One period of a report: its label and ``[start, end)`` in UTC."""

    label: str
    start: datetime
    end: datetime


@dataclass
class Table:
    """A report: columns, rows (label first, then fen amounts) and chart series."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    values: dict[str, list[int]] = field(default_factory=dict)


def buckets(grain: str, start: date, end: date, zone: ZoneInfo) -> list[Bucket]:
    """The buckets of ``grain`` covering the local dates ``start`` to ``end`` inclusive."""
    out: list[Bucket] = []
    day = start
    while day <= end and len(out) < MAX_BUCKETS:
        nxt = _next(grain, day)
        if grain == "shift":
            for n, hour in enumerate(SHIFT_STARTS):
                stop = SHIFT_STARTS[n + 1] if n + 1 < len(SHIFT_STARTS) else 24
                label = f"{day.isoformat()} {hour:02d}-{stop:02d}"
                out.append(Bucket(label, _utc(day, hour, zone), _utc(day, stop, zone)))
        else:
            out.append(Bucket(_label(grain, day), _utc(day, 0, zone), _utc(nxt, 0, zone)))
        day = nxt
    return out


def _next(grain: str, day: date) -> date:
    if grain in ("shift", "day"):
        return day + timedelta(days=1)
    if grain == "month":
        return date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return date(day.year + 1, 1, 1)


def _label(grain: str, day: date) -> str:
    return {"day": day.isoformat(), "month": day.strftime("%Y-%m"), "year": str(day.year)}[grain]


def _utc(day: date, hour: int, zone: ZoneInfo) -> datetime:
    base = datetime(day.year, day.month, day.day, tzinfo=zone) + timedelta(hours=hour)
    return base.astimezone(UTC)


def align(grain: str, start: date) -> date:
    """The first day of the bucket that holds ``start``."""
    if grain == "month":
        return start.replace(day=1)
    if grain == "year":
        return start.replace(month=1, day=1)
    return start


def _bucket_of(column: Any, parts: list[Bucket]) -> ColumnElement[int]:
    return case(*[(column < b.end, n) for n, b in enumerate(parts)], else_=-1)


def _in_range(column: Any, parts: list[Bucket]) -> ColumnElement[bool]:
    return and_(column >= parts[0].start, column < parts[-1].end)


def _grid(title: str, parts: list[Bucket], sums: dict[str, dict[int, int]]) -> Table:
    series = sorted(sums)
    table = Table(title, ["period", *series], series=series, labels=[b.label for b in parts])
    table.values = {s: [sums[s].get(n, 0) for n in range(len(parts))] for s in series}
    for n, b in enumerate(parts):
        table.rows.append([b.label, *(sums[s].get(n, 0) for s in series)])
    if series:
        table.rows.append(["total", *(sum(table.values[s]) for s in series)])
    return table


def merchant_kind() -> ColumnElement[bool]:
    """Accounts of merchants: kind ``merchant`` or a module's ``<module>.merchant``."""
    return or_(Account.kind == "merchant", Account.kind.like("%.merchant"))


def takings(session: Session, parts: list[Bucket]) -> Table:
    """Net takings per merchant account: credits to it minus debits (refunds) per bucket."""
    bucket = _bucket_of(Entry.occurred_at, parts)
    rows = session.execute(
        select(Account.name, bucket, func.sum(-Line.amount_fen))
        .join(Line, Line.account_id == Account.id)
        .join(Entry, Entry.id == Line.entry_id)
        .where(merchant_kind(), _in_range(Entry.occurred_at, parts))
        .group_by(Account.name, bucket)
    )
    sums: dict[str, dict[int, int]] = defaultdict(dict)
    for name, n, amount in rows:
        sums[name][n] = int(amount or 0)
    return _grid("takings", parts, sums)


def top_ups(session: Session, parts: list[Bucket]) -> Table:
    """Top-ups per channel (``topup.cash``, ``topup.bank``, ...) per bucket."""
    bucket = _bucket_of(Entry.occurred_at, parts)
    rows = session.execute(
        select(Entry.code, bucket, func.sum(Line.amount_fen))
        .join(Line, Line.entry_id == Entry.id)
        .where(
            Entry.code.like("topup.%"),
            Entry.code.not_like("%.reversal"),
            Line.amount_fen > 0,
            _in_range(Entry.occurred_at, parts),
        )
        .group_by(Entry.code, bucket)
    )
    sums: dict[str, dict[int, int]] = defaultdict(dict)
    for code, n, amount in rows:
        sums[code.removeprefix("topup.")][n] = int(amount or 0)
    return _grid("top_ups", parts, sums)


def subsidy_use(session: Session, parts: list[Bucket]) -> Table:
    """Subsidies granted, spent and reclaimed per bucket (movements of subsidy purses)."""
    bucket = _bucket_of(Entry.occurred_at, parts)
    kind = case(
        (Entry.code == "subsidy.grant", "granted"),
        (Entry.code == "subsidy.reclaim", "reclaimed"),
        else_="spent",
    )
    rows = session.execute(
        select(kind, bucket, func.sum(Line.amount_fen))
        .join(Line, Line.entry_id == Entry.id)
        .join(Account, Account.id == Line.account_id)
        .where(Account.kind == "holder.subsidy", _in_range(Entry.occurred_at, parts))
        .group_by(kind, bucket)
    )
    sums: dict[str, dict[int, int]] = defaultdict(dict)
    for name, n, amount in rows:
        # Subsidy purses are liabilities: a grant credits (negative), spending debits them.
        sums[name][n] = abs(int(amount or 0))
    return _grid("subsidy_use", parts, sums)


def balances(session: Session) -> Table:
    """What the tenant owes holders now: balance and account count per liability kind."""
    rows = session.execute(
        select(Account.kind, func.count(Account.id), func.sum(Balance.raw_fen))
        .join(Balance, Balance.account_id == Account.id)
        .where(Account.kind.in_(LIABILITY_KINDS))
        .group_by(Account.kind)
    )
    found = {k: (int(c), -int(s or 0)) for k, c, s in rows}
    table = Table("balances", ["kind", "accounts", "balance"], series=["balance"])
    for kind in LIABILITY_KINDS:
        count, amount = found.get(kind, (0, 0))
        table.rows.append([kind, count, amount])
    table.labels = list(LIABILITY_KINDS)
    table.values = {"balance": [r[2] for r in table.rows]}
    table.rows.append(["total", sum(r[1] for r in table.rows), sum(table.values["balance"])])
    return table
