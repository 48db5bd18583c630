"""``/accounts``: balances, statements, top-ups, refunds, adjustments, subsidies, transfers.

Every write honours ``Idempotency-Key``: a retried request returns the first result. Refunds
and adjustments above the tenant threshold answer 202 with a pending approval instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from onecard.platform.db.tenancy import get_scoped
from onecard.platform.errors import NotFound, ValidationFailed
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import HOLDER_KINDS, holder_accounts
from onecard.platform.ledger.models import Account, Balance, Entry, Line
from onecard.platform.ledger.posting import was_replayed
from onecard.platform.people.services import get_person
from onecard.web.api.base import Call, Out, QueryModel, dump, endpoint, paged
from onecard.web.api.common import submit_entry_action
from onecard.web.api.ledger import entry_json

Fen = Field(gt=0, le=10**12)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TopUpIn(_In):
    """A top-up at the cash desk or by bank (bank top-ups carry the bank's reference)."""

    amount_fen: int = Fen
    channel: str = Field(default="cash", pattern=r"^(cash|bank)$")
    bank_reference: str | None = Field(default=None, min_length=1, max_length=64)


class RefundIn(_In):
    """Cash paid back from the purse."""

    amount_fen: int = Fen
    memo: str = Field(default="", max_length=200)


class AdjustmentIn(_In):
    """A manual correction; positive raises the balance, negative lowers it."""

    amount_fen: int = Field(ge=-(10**12), le=10**12)
    reason: str = Field(min_length=3, max_length=200)


class SubsidyIn(_In):
    """A subsidy credited to the holder's subsidy purse."""

    amount_fen: int = Fen
    memo: str = Field(default="", max_length=200)


class TransferIn(_In):
    """Value moved to another holder purse."""

    to_account_id: int = Field(gt=0)
    amount_fen: int = Fen


class SubsidyBatchLine(_In):
    """One person's subsidy in a batch."""

    person_id: int = Field(gt=0)
    amount_fen: int = Fen


class SubsidyBatchIn(_In):
    """Subsidies for many people; ``batch_id`` makes the batch safe to resend."""

    batch_id: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9._:-]+$")
    memo: str = Field(default="", max_length=200)
    preview: bool = False
    lines: list[SubsidyBatchLine] = Field(min_length=1, max_length=20000)


class AccountOut(Out):
    """An account and its normal balance."""

    id: int
    code: str
    name: str
    type: str
    kind: str
    currency: str
    owner_type: str | None
    owner_id: int | None
    min_balance_fen: int | None
    opened_at: datetime
    closed_at: datetime | None


class AccountsQuery(QueryModel):
    """``person_id`` lists a holder's accounts (opening missing ones); else the tenant's own."""

    person_id: int | None = None


def load_account(call: Call, account_id: int) -> Account:
    """The account if the actor may see it (holder accounts follow the holder's data scope)."""
    call.actor.ensure("accounts.view")
    account = get_scoped(call.session, Account, account_id)
    if account is None:
        raise NotFound(f"account {account_id} not found")
    if account.owner_type == "person" and account.owner_id is not None:
        get_person(call.session, account.owner_id, actor=call.actor)
    elif call.actor.org_unit_scope is not None:
        raise NotFound(f"account {account_id} not found")
    return account


def account_json(call: Call, account: Account) -> dict[str, Any]:
    """An account with ``balance_fen`` (normal balance) added."""
    raw = call.session.scalar(select(Balance.raw_fen).where(Balance.account_id == account.id))
    return {**dump(AccountOut, account), "balance_fen": (raw or 0) * account.sign}


@endpoint(
    "GET",
    "/accounts",
    tag="accounts",
    query=AccountsQuery,
    response=AccountOut,
    list_response=True,
    permission="accounts.view",
)
def list_accounts(call: Call) -> Any:
    """A holder's accounts, or the tenant's own accounts."""
    q: AccountsQuery = call.query
    if q.person_id is not None:
        get_person(call.session, q.person_id, actor=call.actor)
        accounts = list(holder_accounts(call.session, q.person_id, now=call.now).values())
    else:
        if call.actor.org_unit_scope is not None:
            accounts = []
        else:
            accounts = list(
                call.session.scalars(
                    select(Account).where(Account.owner_type.is_(None)).order_by(Account.id)
                )
            )
    return paged([account_json(call, a) for a in accounts], len(accounts), len(accounts) or 1, 0)


@endpoint("GET", "/accounts/{account_id}", tag="accounts", response=AccountOut)
def get_account(call: Call) -> Any:
    """Read one account with its balance."""
    return account_json(call, load_account(call, call.path["account_id"]))


class StatementQuery(QueryModel):
    """Paging of a statement (newest first)."""

    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0)


@endpoint("GET", "/accounts/{account_id}/statement", tag="accounts", query=StatementQuery)
def statement(call: Call) -> Any:
    """The account's lines with their entries, newest first."""
    account = load_account(call, call.path["account_id"])
    q: StatementQuery = call.query
    base = (
        select(Line, Entry)
        .join(Entry, Entry.id == Line.entry_id)
        .where(Line.account_id == account.id)
    )
    total = (
        call.session.scalar(select(func.count(Line.id)).where(Line.account_id == account.id)) or 0
    )
    rows = call.session.execute(base.order_by(Line.id.desc()).limit(q.limit).offset(q.offset))
    items = [
        {
            "line_id": ln.id,
            "amount_fen": ln.amount_fen * account.sign,
            "entry_id": e.id,
            "code": e.code,
            "memo": e.memo,
            "occurred_at": e.occurred_at.isoformat(),
            "recorded_at": e.recorded_at.isoformat(),
        }
        for ln, e in rows
    ]
    return paged(items, total, q.limit, q.offset)


def _holder(call: Call, kind: str) -> Account:
    account = load_account(call, call.path["account_id"])
    if account.kind != kind or account.owner_id is None:
        raise ValidationFailed(f"this operation needs a {kind} account", field="account_id")
    return account


def _entry_result(entry: Entry, call: Call) -> tuple[dict[str, Any], int]:
    return entry_json(call.session, entry), 200 if was_replayed(entry) else 201


@endpoint(
    "POST",
    "/accounts/{account_id}/top-ups",
    tag="accounts",
    body=TopUpIn,
    status=201,
    idempotent_key=True,
    permission="accounts.top_up",
)
def top_up(call: Call) -> Any:
    """Top up a holder purse (cash desk, or bank with its reference)."""
    purse = _holder(call, "holder.purse")
    body: TopUpIn = call.body
    assert purse.owner_id is not None
    entry = ops.top_up(
        call.session,
        purse.owner_id,
        body.amount_fen,
        channel=body.channel,
        bank_reference=body.bank_reference,
        actor=call.actor,
        now=call.now,
        idempotency_key=call.idempotency_key,
    )
    return _entry_result(entry, call)


@endpoint(
    "POST",
    "/accounts/{account_id}/refunds",
    tag="accounts",
    body=RefundIn,
    status=201,
    idempotent_key=True,
    permission="accounts.refund",
)
def refund(call: Call) -> Any:
    """Refund purse money in cash; above the threshold a second operator must approve (202)."""
    purse = _holder(call, "holder.purse")
    body: RefundIn = call.body
    return submit_entry_action(
        call,
        "refund",
        {"person_id": purse.owner_id, "amount_fen": body.amount_fen, "memo": body.memo},
        amount_fen=body.amount_fen,
        summary=f"refund {body.amount_fen} fen from account {purse.code}",
    )


@endpoint(
    "POST",
    "/accounts/{account_id}/adjustments",
    tag="accounts",
    body=AdjustmentIn,
    status=201,
    idempotent_key=True,
    permission="accounts.adjust",
)
def adjust(call: Call) -> Any:
    """Manually adjust a holder account; above the threshold needs a second operator (202)."""
    account = load_account(call, call.path["account_id"])
    if account.kind not in HOLDER_KINDS:
        raise ValidationFailed("only holder accounts are adjusted by hand", field="account_id")
    body: AdjustmentIn = call.body
    if body.amount_fen == 0:
        raise ValidationFailed("amount_fen must not be zero", field="amount_fen")
    return submit_entry_action(
        call,
        "adjustment",
        {"account_id": account.id, "amount_fen": body.amount_fen, "reason": body.reason},
        amount_fen=body.amount_fen,
        summary=f"adjust {account.code} by {body.amount_fen} fen: {body.reason}",
    )


@endpoint(
    "POST",
    "/accounts/{account_id}/subsidies",
    tag="accounts",
    body=SubsidyIn,
    status=201,
    idempotent_key=True,
    permission="accounts.subsidy",
)
def subsidy(call: Call) -> Any:
    """Grant a subsidy to a holder's subsidy purse."""
    purse = _holder(call, "holder.subsidy")
    assert purse.owner_id is not None
    entry = ops.grant_subsidy(
        call.session,
        purse.owner_id,
        call.body.amount_fen,
        actor=call.actor,
        now=call.now,
        memo=call.body.memo,
        idempotency_key=call.idempotency_key,
    )
    return _entry_result(entry, call)


@endpoint(
    "POST",
    "/accounts/{account_id}/transfers",
    tag="accounts",
    body=TransferIn,
    status=201,
    idempotent_key=True,
    permission="accounts.top_up",
)
def transfer(call: Call) -> Any:
    """Move value to another holder purse."""
    source = load_account(call, call.path["account_id"])
    target = load_account(call, call.body.to_account_id)
    entry = ops.transfer(
        call.session,
        source,
        target,
        call.body.amount_fen,
        actor=call.actor,
        now=call.now,
        idempotency_key=call.idempotency_key,
    )
    return _entry_result(entry, call)


@endpoint(
    "POST",
    "/subsidy-batches",
    tag="accounts",
    body=SubsidyBatchIn,
    status=201,
    permission="accounts.subsidy",
)
def subsidy_batch(call: Call) -> Any:
    """Grant subsidies to many people; ``preview`` validates and totals without posting."""
    body: SubsidyBatchIn = call.body
    for line in body.lines:
        get_person(call.session, line.person_id, actor=call.actor)
    total = sum(ln.amount_fen for ln in body.lines)
    if body.preview:
        return {
            "batch_id": body.batch_id,
            "people": len(body.lines),
            "total_fen": total,
            "preview": True,
        }, 200
    entries = ops.grant_subsidy_batch(
        call.session,
        body.batch_id,
        [ops.SubsidyLine(ln.person_id, ln.amount_fen) for ln in body.lines],
        actor=call.actor,
        now=call.now,
        memo=body.memo,
    )
    return {
        "batch_id": body.batch_id,
        "people": len(entries),
        "total_fen": total,
        "entry_ids": [e.id for e in entries],
        "replayed": sum(1 for e in entries if was_replayed(e)),
    }
