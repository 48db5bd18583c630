"""Opening accounts: the tenant's own accounts and each holder's purses.

Holder accounts are opened lazily, on the first card or the first money movement, so that
importing 100,000 people does not write 600,000 ledger rows nobody uses yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from onecard.platform.db.tenancy import require_tenant_id
from onecard.platform.errors import NotFound
from onecard.platform.ledger.models import Account, AccountType, Balance


@dataclass(frozen=True)
class AccountTemplate:
    """How to open one kind of account."""

    kind: str
    type: AccountType
    code: str  # may contain {owner_id}
    name: str
    min_balance_fen: int | None


TENANT_ACCOUNTS = (
    AccountTemplate("cash_desk", AccountType.ASSET, "Assets:Cash:Main", "Main cash desk", None),
    AccountTemplate(
        "bank_clearing", AccountType.ASSET, "Assets:Bank:Clearing", "Bank top-up clearing", None
    ),
    AccountTemplate(
        "subsidy_expense", AccountType.EXPENSE, "Expenses:Subsidy", "Subsidies granted", None
    ),
    AccountTemplate(
        "card_float",
        AccountType.LIABILITY,
        "Liabilities:CardFloat",
        "Value held on cards (offline purses)",
        None,
    ),
    AccountTemplate(
        "adjustments", AccountType.EQUITY, "Equity:Adjustments", "Manual adjustments", None
    ),
    AccountTemplate(
        "receivables",
        AccountType.ASSET,
        "Assets:Receivables:Holders",
        "Owed by holders (offline overspend)",
        None,
    ),
)

HOLDER_ACCOUNTS = (
    AccountTemplate(
        "holder.purse", AccountType.LIABILITY, "Liabilities:Holders:{owner_id}:Purse", "Purse", 0
    ),
    AccountTemplate(
        "holder.subsidy",
        AccountType.LIABILITY,
        "Liabilities:Holders:{owner_id}:Subsidy",
        "Subsidy purse",
        0,
    ),
    AccountTemplate(
        "holder.deposit",
        AccountType.LIABILITY,
        "Liabilities:Holders:{owner_id}:Deposit",
        "Card deposit",
        0,
    ),
)

HOLDER_KINDS = tuple(t.kind for t in HOLDER_ACCOUNTS)


def open_account(
    session: Session,
    template: AccountTemplate,
    *,
    now: datetime,
    owner: tuple[str, int] | None = None,
    code: str | None = None,
    name: str | None = None,
) -> Account:
    """Open an account from ``template`` with its zero balance row; never commits."""
    owner_type, owner_id = owner if owner else (None, None)
    account = Account(
        tenant_id=require_tenant_id(),
        code=code or template.code.format(owner_id=owner_id),
        name=name or template.name,
        type=template.type.value,
        kind=template.kind,
        owner_type=owner_type,
        owner_id=owner_id,
        min_balance_fen=template.min_balance_fen,
        opened_at=now,
    )
    session.add(account)
    session.flush()
    session.add(Balance(account_id=account.id, raw_fen=0, line_count=0, updated_at=now))
    session.flush()
    return account


def open_tenant_accounts(session: Session, *, now: datetime) -> list[Account]:
    """Open the accounts every tenant has (cash desk, bank clearing, subsidy expense, ...)."""
    return [open_account(session, t, now=now) for t in TENANT_ACCOUNTS]


def tenant_account(session: Session, kind: str) -> Account:
    """The tenant's single account of ``kind`` (``cash_desk``, ``bank_clearing``, ...)."""
    account = session.scalar(
        select(Account)
        .where(Account.kind == kind, Account.owner_type.is_(None))
        .order_by(Account.id)
    )
    if account is None:
        raise NotFound(f"tenant has no {kind} account")
    return account


def holder_account(session: Session, person_id: int, kind: str, *, now: datetime) -> Account:
    """The holder account of ``kind`` for a person, opened on first use."""
    template = next(t for t in HOLDER_ACCOUNTS if t.kind == kind)
    found = _find_owned(session, "person", person_id, kind)
    if found is not None:
        return found
    try:
        with session.begin_nested():
            return open_account(session, template, now=now, owner=("person", person_id))
    except IntegrityError:  # opened concurrently by another transaction
        found = _find_owned(session, "person", person_id, kind)
        assert found is not None
        return found


def holder_accounts(session: Session, person_id: int, *, now: datetime) -> dict[str, Account]:
    """All holder accounts of a person by kind, opening the missing ones."""
    return {kind: holder_account(session, person_id, kind, now=now) for kind in HOLDER_KINDS}


def _find_owned(session: Session, owner_type: str, owner_id: int, kind: str) -> Account | None:
    return session.scalar(
        select(Account).where(
            Account.owner_type == owner_type, Account.owner_id == owner_id, Account.kind == kind
        )
    )


def balance_of(session: Session, account: Account) -> int:
    """The normal balance of ``account`` in fen (what a person would call its balance)."""
    raw = session.scalar(select(Balance.raw_fen).where(Balance.account_id == account.id))
    return (raw or 0) * account.sign
