"""Factories shared by the platform tests: merchants, holder accounts, journals, operators.

The database fixtures (``session``, ``tenant``, ``make_person``, ...) come from the
``onecard.testing.fixtures`` plugin; this file only adds the vocabulary the worked examples need.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard.platform.actors import Actor
from onecard.platform.audit.models import AuditEvent
from onecard.platform.authz import services as authz
from onecard.platform.authz.models import Operator
from onecard.platform.ledger.accounts import (
    AccountTemplate,
    balance_of,
    holder_accounts,
    open_account,
)
from onecard.platform.ledger.models import Account, AccountType, Entry, Line
from onecard.platform.people.models import Person

MERCHANT = AccountTemplate(
    "merchant", AccountType.LIABILITY, "Liabilities:Merchants:Canteen-A", "Canteen A", None
)
PASSWORD = "correct horse battery"

Journal = list[tuple[str, str, int]]


@pytest.fixture
def merchant(session: Session, tenant, now: datetime) -> Account:
    """The canteen's merchant account (what the tenant owes the canteen operator)."""
    return open_account(session, MERCHANT, now=now)


@pytest.fixture
def accounts_of(session: Session, now: datetime) -> Callable[[Person], dict[str, Account]]:
    """Factory: a person's holder accounts by kind (``holder.purse``, ``holder.subsidy``...)."""

    def _accounts(person: Person) -> dict[str, Account]:
        return holder_accounts(session, person.id, now=now)

    return _accounts


@pytest.fixture
def balance(session: Session) -> Callable[[Account], int]:
    """Factory: the normal balance of an account in fen (what a person calls its balance)."""
    return lambda account: balance_of(session, account)


@pytest.fixture
def journal(session: Session) -> Callable[[Entry], Journal]:
    """Factory: an entry as an accountant reads it, ``[("Dr", kind, fen), ("Cr", kind, fen)]``.

    Accounts are named by kind (``cash_desk``, ``holder.purse``, ``merchant``...), debits first.
    """

    def _journal(entry: Entry) -> Journal:
        rows = session.execute(
            select(Line.amount_fen, Account.kind)
            .join(Account, Account.id == Line.account_id)
            .where(Line.entry_id == entry.id)
        )
        lines = [("Dr" if amount > 0 else "Cr", kind, abs(amount)) for amount, kind in rows]
        return sorted(lines, key=lambda ln: (ln[0] != "Dr", ln[1]))

    return _journal


@pytest.fixture
def count_rows(session: Session) -> Callable[[type], int]:
    """Factory: how many rows of a tenant-owned model the tenant in scope has."""
    return lambda model: session.scalar(select(func.count()).select_from(model)) or 0


@pytest.fixture
def audit_types(session: Session) -> Callable[..., list[str]]:
    """Factory: audit event types of the tenant in scope, oldest first (optionally per object)."""

    def _types(object_type: str | None = None, object_id: object = None) -> list[str]:
        stmt = select(AuditEvent.type).order_by(AuditEvent.seq)
        if object_type is not None:
            stmt = stmt.where(AuditEvent.object_type == object_type)
        if object_id is not None:
            stmt = stmt.where(AuditEvent.object_id == str(object_id))
        return list(session.scalars(stmt))

    return _types


@pytest.fixture
def make_operator(
    session: Session, tenant, system_actor: Actor, now: datetime
) -> Callable[..., tuple[Operator, Actor]]:
    """Factory: a real operator of the tenant in scope and the Actor their login would give."""

    def _make(
        username: str,
        *,
        roles: tuple[str, ...] = ("tenant_admin",),
        scope: dict[str, list[int]] | None = None,
    ) -> tuple[Operator, Actor]:
        operator = authz.create_operator(
            session,
            username,
            PASSWORD,
            actor=system_actor,
            now=now,
            policy=authz.AuthPolicy(),
            roles=list(roles),
            scope=scope,
        )
        return operator, authz.actor_for(session, operator)

    return _make
