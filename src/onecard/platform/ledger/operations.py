"""The money operations of the card centre, each one balanced entry plus an audit event.

Every function takes the caller's session, explicit ``actor`` and ``now``, never commits, and
is idempotent through ``idempotency_key`` (see :func:`onecard.platform.ledger.posting.post`).
Four-eyes approval is decided one level up (``approvals``); these functions just move money.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.platform.actors import Actor
from onecard.platform.audit.record import record
from onecard.platform.errors import DuplicateRequest, InsufficientFunds, ValidationFailed
from onecard.platform.ledger.accounts import holder_account, tenant_account
from onecard.platform.ledger.models import Account, Balance, Entry
from onecard.platform.ledger.posting import (
    LineSpec,
    PostingRequest,
    find_by_key,
    post,
    was_replayed,
)
from onecard.platform.money import require_positive_fen

PURSE, SUBSIDY, DEPOSIT = "holder.purse", "holder.subsidy", "holder.deposit"
CHANNELS = ("cash", "bank")


def new_key() -> str:
    """A fresh idempotency key for writes that came without one."""
    return uuid.uuid4().hex


def _credit_liability(account: Account, amount: int) -> LineSpec:
    return LineSpec(account.id, -amount)


def _debit(account: Account, amount: int) -> LineSpec:
    return LineSpec(account.id, amount)


def _post_and_audit(
    session: Session,
    request: PostingRequest,
    audit_type: str,
    *,
    actor: Actor,
    now: datetime,
    data: dict[str, object],
) -> Entry:
    entry = post(session, request, actor=actor, now=now)
    if not was_replayed(entry):
        record(
            session,
            audit_type,
            actor=actor,
            now=now,
            object_type="entry",
            object_id=entry.id,
            data={**data, "code": request.code},
        )
    return entry


def top_up(
    session: Session,
    person_id: int,
    amount_fen: int,
    *,
    channel: str,
    actor: Actor,
    now: datetime,
    bank_reference: str | None = None,
    idempotency_key: str | None = None,
) -> Entry:
    """Credit a holder's purse from the cash desk or the bank clearing account.

    A bank top-up must carry the bank's reference, which also becomes its idempotency key, so
    the bank's retries can never credit twice.
    """
    require_positive_fen(amount_fen)
    source = _top_up_source(session, channel, bank_reference)
    purse = holder_account(session, person_id, PURSE, now=now)
    key = f"bank:{bank_reference}" if channel == "bank" else (idempotency_key or new_key())
    request = PostingRequest(
        code=f"topup.{channel}",
        lines=(_debit(source, amount_fen), _credit_liability(purse, amount_fen)),
        idempotency_key=key,
        reference={"person_id": person_id, "bank_reference": bank_reference},
    )
    return _post_and_audit(
        session,
        request,
        "ledger.top_up",
        actor=actor,
        now=now,
        data={"person_id": person_id, "amount_fen": amount_fen},
    )


def _top_up_source(session: Session, channel: str, bank_reference: str | None) -> Account:
    if channel not in CHANNELS:
        raise ValidationFailed(f"channel must be one of {', '.join(CHANNELS)}", field="channel")
    if channel == "bank":
        if not bank_reference:
            raise ValidationFailed("a bank top-up needs the bank reference", field="bank_reference")
        return tenant_account(session, "bank_clearing")
    return tenant_account(session, "cash_desk")


def refund(
    session: Session,
    person_id: int,
    amount_fen: int,
    *,
    actor: Actor,
    now: datetime,
    idempotency_key: str | None = None,
    memo: str = "",
) -> Entry:
    """Pay purse money back to the holder in cash (debit the purse, credit the cash desk)."""
    require_positive_fen(amount_fen)
    purse = holder_account(session, person_id, PURSE, now=now)
    cash = tenant_account(session, "cash_desk")
    request = PostingRequest(
        code="refund.cash",
        lines=(_debit(purse, amount_fen), LineSpec(cash.id, -amount_fen)),
        idempotency_key=idempotency_key or new_key(),
        memo=memo,
        reference={"person_id": person_id},
    )
    return _post_and_audit(
        session,
        request,
        "ledger.refund",
        actor=actor,
        now=now,
        data={"person_id": person_id, "amount_fen": amount_fen},
    )


def transfer(
    session: Session,
    from_account: Account,
    to_account: Account,
    amount_fen: int,
    *,
    actor: Actor,
    now: datetime,
    idempotency_key: str | None = None,
) -> Entry:
    """Move value between two holder purses (same or different holders)."""
    require_positive_fen(amount_fen)
    for account in (from_account, to_account):
        if not account.kind.startswith("holder."):
            raise ValidationFailed("transfers are between holder purses", account_id=account.id)
    if from_account.id == to_account.id:
        raise ValidationFailed("cannot transfer an account to itself")
    request = PostingRequest(
        code="transfer",
        lines=(_debit(from_account, amount_fen), _credit_liability(to_account, amount_fen)),
        idempotency_key=idempotency_key or new_key(),
    )
    return _post_and_audit(
        session,
        request,
        "ledger.transfer",
        actor=actor,
        now=now,
        data={"from": from_account.id, "to": to_account.id, "amount_fen": amount_fen},
    )


def grant_subsidy(
    session: Session,
    person_id: int,
    amount_fen: int,
    *,
    actor: Actor,
    now: datetime,
    idempotency_key: str | None = None,
    memo: str = "",
) -> Entry:
    """Grant a subsidy: debit the subsidy expense, credit the holder's subsidy purse."""
    require_positive_fen(amount_fen)
    expense = tenant_account(session, "subsidy_expense")
    purse = holder_account(session, person_id, SUBSIDY, now=now)
    request = PostingRequest(
        code="subsidy.grant",
        lines=(_debit(expense, amount_fen), _credit_liability(purse, amount_fen)),
        idempotency_key=idempotency_key or new_key(),
        memo=memo,
        reference={"person_id": person_id},
    )
    return _post_and_audit(
        session,
        request,
        "ledger.subsidy_granted",
        actor=actor,
        now=now,
        data={"person_id": person_id, "amount_fen": amount_fen},
    )


@dataclass(frozen=True)
class SubsidyLine:
    """One row of a subsidy batch."""

    person_id: int
    amount_fen: int


def grant_subsidy_batch(
    session: Session,
    batch_id: str,
    lines: Iterable[SubsidyLine],
    *,
    actor: Actor,
    now: datetime,
    memo: str = "",
) -> list[Entry]:
    """Grant many subsidies; each row's key is ``batch_id:person_id`` so a rerun adds nothing."""
    if not batch_id:
        raise ValidationFailed("a subsidy batch needs an id", field="batch_id")
    return [
        grant_subsidy(
            session,
            ln.person_id,
            ln.amount_fen,
            actor=actor,
            now=now,
            memo=memo,
            idempotency_key=f"subsidy:{batch_id}:{ln.person_id}",
        )
        for ln in lines
    ]


def take_deposit(
    session: Session,
    person_id: int,
    amount_fen: int,
    *,
    actor: Actor,
    now: datetime,
    idempotency_key: str | None = None,
) -> Entry:
    """Take a card deposit in cash: debit the cash desk, credit the holder's deposit."""
    require_positive_fen(amount_fen)
    cash = tenant_account(session, "cash_desk")
    deposit = holder_account(session, person_id, DEPOSIT, now=now)
    request = PostingRequest(
        code="deposit.take",
        lines=(_debit(cash, amount_fen), _credit_liability(deposit, amount_fen)),
        idempotency_key=idempotency_key or new_key(),
        reference={"person_id": person_id},
    )
    return _post_and_audit(
        session,
        request,
        "ledger.deposit_taken",
        actor=actor,
        now=now,
        data={"person_id": person_id, "amount_fen": amount_fen},
    )


def release_deposit(
    session: Session,
    person_id: int,
    amount_fen: int,
    *,
    actor: Actor,
    now: datetime,
    idempotency_key: str | None = None,
) -> Entry:
    """Give a card deposit back in cash: debit the holder's deposit, credit the cash desk."""
    require_positive_fen(amount_fen)
    cash = tenant_account(session, "cash_desk")
    deposit = holder_account(session, person_id, DEPOSIT, now=now)
    request = PostingRequest(
        code="deposit.release",
        lines=(_debit(deposit, amount_fen), LineSpec(cash.id, -amount_fen)),
        idempotency_key=idempotency_key or new_key(),
        reference={"person_id": person_id},
    )
    return _post_and_audit(
        session,
        request,
        "ledger.deposit_released",
        actor=actor,
        now=now,
        data={"person_id": person_id, "amount_fen": amount_fen},
    )


def adjust(
    session: Session,
    account: Account,
    amount_fen: int,
    *,
    actor: Actor,
    now: datetime,
    reason: str,
    idempotency_key: str | None = None,
) -> Entry:
    """Manual adjustment of a holder account against equity; ``amount_fen`` may be negative.

    A positive amount raises the account's normal balance, a negative one lowers it.
    """
    if isinstance(amount_fen, bool) or not isinstance(amount_fen, int) or amount_fen == 0:
        raise ValidationFailed("adjustment amount must be a non-zero whole number of fen")
    require_positive_fen(abs(amount_fen))
    if not reason.strip():
        raise ValidationFailed("an adjustment needs a reason", field="reason")
    equity = tenant_account(session, "adjustments")
    raw = amount_fen * account.sign
    request = PostingRequest(
        code="adjustment",
        lines=(LineSpec(account.id, raw), LineSpec(equity.id, -raw)),
        idempotency_key=idempotency_key or new_key(),
        memo=reason,
    )
    return _post_and_audit(
        session,
        request,
        "ledger.adjusted",
        actor=actor,
        now=now,
        data={"account_id": account.id, "amount_fen": amount_fen, "reason": reason},
    )


def charge(
    session: Session,
    person_id: int,
    merchant: Account,
    amount_fen: int,
    *,
    actor: Actor,
    now: datetime,
    code: str,
    idempotency_key: str,
    occurred_at: datetime | None = None,
) -> Entry:
    """Spend from a holder's purses to a merchant, drawing the subsidy purse first.

    Raises :class:`InsufficientFunds` when subsidy plus purse do not cover ``amount_fen``. The
    split depends on balances at the first attempt, so a replay is matched by its intent
    (person, merchant, amount), not by its lines.
    """
    require_positive_fen(amount_fen)
    intent = {"person_id": person_id, "merchant_id": merchant.id, "amount_fen": amount_fen}
    existing = find_by_key(session, idempotency_key)
    if existing is not None:
        return _replay_charge(existing, code, intent, idempotency_key)
    (subsidy, subsidy_fen), (purse, purse_fen) = _spendable(session, person_id, now)
    from_subsidy = min(max(subsidy_fen, 0), amount_fen)
    from_purse = amount_fen - from_subsidy
    if from_purse > max(purse_fen, 0):
        raise InsufficientFunds(
            "purse and subsidy do not cover the amount", person_id=person_id, amount_fen=amount_fen
        )
    lines = [LineSpec(merchant.id, -amount_fen)]
    if from_subsidy:
        lines.append(_debit(subsidy, from_subsidy))
    if from_purse:
        lines.append(_debit(purse, from_purse))
    request = PostingRequest(
        code=code,
        lines=tuple(lines),
        idempotency_key=idempotency_key,
        occurred_at=occurred_at,
        reference=intent,
        intent=intent,
    )
    known = {a.id: a for a in (merchant, subsidy, purse)}
    return post(session, request, actor=actor, now=now, accounts=known, key_checked=True)


def _replay_charge(existing: Entry, code: str, intent: dict[str, int], key: str) -> Entry:
    if existing.code != code or existing.reference != intent:
        raise DuplicateRequest(
            "idempotency key was already used for a different charge",
            idempotency_key=key,
            entry_id=existing.id,
        )
    existing._onecard_replayed = True  # type: ignore[attr-defined]
    return existing


def _spendable(
    session: Session, person_id: int, now: datetime
) -> tuple[tuple[Account, int], tuple[Account, int]]:
    """The holder's subsidy and cash purses with their (unlocked) normal balances.

    One query in the common case; the minimum check under lock in :func:`post` is what makes
    spending safe, this only decides the split.
    """
    rows = session.execute(
        select(Account, Balance.raw_fen)
        .join(Balance, Balance.account_id == Account.id)
        .where(
            Account.owner_type == "person",
            Account.owner_id == person_id,
            Account.kind.in_((SUBSIDY, PURSE)),
        )
    ).all()
    found = {acc.kind: (acc, raw * acc.sign) for acc, raw in rows}
    for kind in (SUBSIDY, PURSE):
        if kind not in found:
            found[kind] = (holder_account(session, person_id, kind, now=now), 0)
    return found[SUBSIDY], found[PURSE]
