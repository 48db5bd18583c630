"""``onecard ledger verify``: recompute every balance from the journal.

Checks, for the tenant in scope: every entry's lines sum to zero; each cached balance and line
count equals the journal; the trial balance (sum of all lines) is zero; no account sits below
its minimum. Problems are values, so the CLI can print them all and exit non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard.platform.ledger.models import Account, Balance, Entry, Line


@dataclass(frozen=True)
class LedgerReport:
    """Outcome of :func:`verify`; ``ok`` when ``problems`` is empty."""

    accounts: int
    entries: int
    lines: int
    trial_balance_fen: int
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """True when the ledger is consistent."""
        return not self.problems


def verify(session: Session) -> LedgerReport:
    """Recompute the ledger of the tenant in scope and report every inconsistency."""
    problems: list[str] = []
    problems += _unbalanced_entries(session)
    problems += _balance_drift(session)
    trial = session.scalar(select(func.coalesce(func.sum(Line.amount_fen), 0))) or 0
    if trial != 0:
        problems.append(f"trial balance is {trial}, not 0")
    return LedgerReport(
        accounts=session.scalar(select(func.count(Account.id))) or 0,
        entries=session.scalar(select(func.count(Entry.id))) or 0,
        lines=session.scalar(select(func.count(Line.id))) or 0,
        trial_balance_fen=int(trial),
        problems=tuple(problems),
    )


def _unbalanced_entries(session: Session) -> list[str]:
    total = func.coalesce(func.sum(Line.amount_fen), 0)
    rows = session.execute(
        select(Entry.id, total, func.count(Line.id))
        .outerjoin(Line, Line.entry_id == Entry.id)
        .group_by(Entry.id)
        .having((total != 0) | (func.count(Line.id) < 2))
    )
    return [f"entry {eid} sums to {amount} over {n} lines" for eid, amount, n in rows]


def _balance_drift(session: Session) -> list[str]:
    journal = {
        aid: (int(total), int(n))
        for aid, total, n in session.execute(
            select(Line.account_id, func.sum(Line.amount_fen), func.count(Line.id)).group_by(
                Line.account_id
            )
        )
    }
    problems = []
    rows = session.execute(
        select(Balance, Account)
        .join(Account, Account.id == Balance.account_id)
        .execution_options(populate_existing=True)
    )
    for balance, account in rows:
        total, count = journal.get(account.id, (0, 0))
        if (balance.raw_fen, balance.line_count) != (total, count):
            problems.append(
                f"account {account.code}: cached {balance.raw_fen} over {balance.line_count} "
                f"lines, journal {total} over {count}"
            )
        minimum = account.min_balance_fen
        if minimum is not None and total * account.sign < minimum:
            problems.append(f"account {account.code} is below its minimum ({total * account.sign})")
    return problems
