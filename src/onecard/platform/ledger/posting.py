"""Posting: the one way money moves.

:func:`post` appends one balanced entry in the caller's transaction and never commits. It is
idempotent by ``(tenant, idempotency_key)``: a replay with the same content returns the first
entry, a replay with other content raises :class:`DuplicateRequest`.

Locking, in two phases that cannot deadlock: first the balance rows of accounts with a minimum
(holder purses) are locked in ascending account id (``SELECT ... FOR UPDATE`` on PostgreSQL;
SQLite holds its database write lock from ``BEGIN IMMEDIATE``) and checked; then every balance
is changed by one relative ``UPDATE`` in ascending account id, as the entry's last statement.
Accounts without a minimum (merchants, cash desks, clearing) are hot rows shared by every sale:
locking them only at that last statement keeps their lock held for little more than the commit.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from onecard.platform.actors import Actor
from onecard.platform.db.engine import is_postgres
from onecard.platform.db.tenancy import get_scoped, require_tenant_id
from onecard.platform.errors import (
    Conflict,
    DuplicateRequest,
    InsufficientFunds,
    NotFound,
    Unbalanced,
    ValidationFailed,
)
from onecard.platform.ledger.models import Account, Balance, Entry, Line
from onecard.platform.money import MAX_FEN


@dataclass(frozen=True)
class LineSpec:
    """A proposed line: ``amount_fen`` > 0 debits the account, < 0 credits it."""

    account_id: int
    amount_fen: int


@dataclass(frozen=True)
class PostingRequest:
    """Everything that defines an entry; its canonical form is what idempotency compares."""

    code: str
    lines: tuple[LineSpec, ...]
    idempotency_key: str
    memo: str = ""
    occurred_at: datetime | None = None
    source: str = "platform"
    reverses_id: int | None = None
    reference: Mapping[str, Any] = field(default_factory=dict)
    # When set, a replay is compared by this intent instead of the lines (used where the lines
    # depend on balances at the first attempt, e.g. subsidy-first spending).
    intent: Mapping[str, Any] | None = None

    def fingerprint(self) -> str:
        """SHA-256 of the content that must match on a replay (not times or actor)."""
        body: dict[str, Any] = {"code": self.code, "reverses_id": self.reverses_id}
        if self.intent is not None:
            body["intent"] = dict(self.intent)
        else:
            body["lines"] = sorted((ln.account_id, ln.amount_fen) for ln in self.lines)
            body["reference"] = dict(self.reference)
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def post(
    session: Session,
    request: PostingRequest,
    *,
    actor: Actor,
    now: datetime,
    accounts: Mapping[int, Account] | None = None,
    key_checked: bool = False,
) -> Entry:
    """Append the entry described by ``request``; return the existing one on a replay.

    Hot callers that already hold the accounts (loaded in this transaction, within the tenant)
    pass ``accounts``, and ``key_checked`` when they looked the key up themselves; both only
    save queries, the checks stay the same.
    """
    if not key_checked:
        existing = find_by_key(session, request.idempotency_key)
        if existing is not None:
            return _replay(existing, request)
    accounts = _accounts_for(session, request.lines, accounts)
    _validate(request, accounts)
    deltas, counts = _net(request.lines)
    try:
        # Before anything is written: a refusal must leave no trace for a caller who commits.
        _check_minimums(session, deltas, accounts)
    except InsufficientFunds:
        existing = find_by_key(session, request.idempotency_key)  # a concurrent twin won
        if existing is None:
            raise
        return _replay(existing, request)
    entry, created = _insert_entry(session, request, actor=actor, now=now)
    if not created:
        return _replay(entry, request)
    session.connection().execute(
        insert(_LINES),
        [
            {
                "tenant_id": entry.tenant_id,
                "entry_id": entry.id,
                "account_id": ln.account_id,
                "amount_fen": ln.amount_fen,
            }
            for ln in request.lines
        ],
    )
    _update_balances(session, deltas, counts, now)
    return entry


_ENTRIES = cast(Table, Entry.__table__)
_LINES = cast(Table, Line.__table__)
_BALANCES = cast(Table, Balance.__table__)


def find_by_key(session: Session, key: str) -> Entry | None:
    """The entry posted under ``key`` for the tenant in scope, if any.

    The common answer is "none": a plain Core lookup on the unique (tenant, key) index, and the
    ORM object is loaded only for a replay.
    """
    entry_id = session.connection().scalar(
        select(_ENTRIES.c.id).where(
            _ENTRIES.c.tenant_id == require_tenant_id(), _ENTRIES.c.idempotency_key == key
        )
    )
    return None if entry_id is None else get_scoped(session, Entry, entry_id)


def _replay(entry: Entry, request: PostingRequest) -> Entry:
    if entry.request_hash != request.fingerprint():
        raise DuplicateRequest(
            "idempotency key was already used for a different entry",
            idempotency_key=request.idempotency_key,
            entry_id=entry.id,
        )
    entry._onecard_replayed = True  # type: ignore[attr-defined]
    return entry


def was_replayed(entry: Entry) -> bool:
    """True when :func:`post` returned an entry that an earlier request created."""
    return bool(getattr(entry, "_onecard_replayed", False))


def _accounts_for(
    session: Session, lines: Sequence[LineSpec], known: Mapping[int, Account] | None
) -> Mapping[int, Account]:
    if known is not None and all(ln.account_id in known for ln in lines):
        tid = require_tenant_id()
        if all(known[ln.account_id].tenant_id == tid for ln in lines):
            return known
    return _load_accounts(session, lines)


def _load_accounts(session: Session, lines: Sequence[LineSpec]) -> dict[int, Account]:
    ids = {ln.account_id for ln in lines}
    found = {a.id: a for a in session.scalars(select(Account).where(Account.id.in_(ids)))}
    missing = ids - found.keys()
    if missing:
        raise NotFound(f"account {min(missing)} not found", account_id=min(missing))
    return found


def _validate(request: PostingRequest, accounts: Mapping[int, Account]) -> None:
    if len(request.lines) < 2:
        raise ValidationFailed("an entry needs at least two lines")
    for ln in request.lines:
        if isinstance(ln.amount_fen, bool) or not isinstance(ln.amount_fen, int):
            raise ValidationFailed("line amounts are whole fen", account_id=ln.account_id)
        if ln.amount_fen == 0 or abs(ln.amount_fen) > MAX_FEN:
            raise ValidationFailed("line amount out of range", account_id=ln.account_id)
    if sum(ln.amount_fen for ln in request.lines) != 0:
        raise Unbalanced("lines do not sum to zero", lines=[ln.amount_fen for ln in request.lines])
    currencies = {a.currency for a in accounts.values()}
    if len(currencies) != 1:
        raise ValidationFailed("an entry may not mix currencies", currencies=sorted(currencies))
    closed = [a.code for a in accounts.values() if a.closed_at is not None]
    if closed:
        raise Conflict(f"account {closed[0]} is closed", account=closed[0])


def _insert_entry(
    session: Session, request: PostingRequest, *, actor: Actor, now: datetime
) -> tuple[Entry, bool]:
    """Insert the entry row; ``(existing, False)`` when a concurrent request won the key.

    ``INSERT ... ON CONFLICT DO NOTHING RETURNING``: a concurrent insert of the same key waits
    for the first transaction and then inserts nothing, in one round trip and no savepoint.
    """
    values = {
        "tenant_id": require_tenant_id(),
        "idempotency_key": request.idempotency_key,
        "request_hash": request.fingerprint(),
        "code": request.code,
        "memo": request.memo,
        "occurred_at": request.occurred_at or now,
        "recorded_at": now,
        "source": request.source,
        "actor_type": actor.type,
        "actor_id": actor.id,
        "reverses_id": request.reverses_id,
        "reference": dict(request.reference),
    }
    dialect_insert = pg_insert if is_postgres(session) else sqlite_insert
    stmt = (
        dialect_insert(Entry)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["tenant_id", "idempotency_key"])
        .returning(Entry)
    )
    try:
        entry = session.scalars(stmt).one_or_none()
    except IntegrityError:
        raise Conflict("entry already reversed", reverses_id=request.reverses_id) from None
    if entry is not None:
        return entry, True
    existing = find_by_key(session, request.idempotency_key)
    assert existing is not None
    return existing, False


def _net(lines: Sequence[LineSpec]) -> tuple[dict[int, int], dict[int, int]]:
    deltas: dict[int, int] = defaultdict(int)
    counts: dict[int, int] = defaultdict(int)
    for ln in lines:
        deltas[ln.account_id] += ln.amount_fen
        counts[ln.account_id] += 1
    return deltas, counts


def _check_minimums(
    session: Session, deltas: Mapping[int, int], accounts: Mapping[int, Account]
) -> None:
    """Phase one: lock and check the accounts that have a minimum, in ascending id."""
    bounded = sorted(aid for aid in deltas if accounts[aid].min_balance_fen is not None)
    if not bounded:
        return
    stmt = (
        select(_BALANCES.c.account_id, _BALANCES.c.raw_fen)
        .where(_BALANCES.c.account_id.in_(bounded))
        .order_by(_BALANCES.c.account_id)
    )
    if is_postgres(session):
        stmt = stmt.with_for_update()
    # Core on the session's connection: the ids were resolved within the tenant.
    raw: dict[int, int] = {aid: value for aid, value in session.connection().execute(stmt)}
    if len(raw) != len(bounded):
        raise NotFound("balance row missing for an account", account_ids=bounded)
    for aid in bounded:
        _check_minimum(accounts[aid], raw[aid], deltas[aid])


_BALANCE_UPDATE = (
    update(_BALANCES)
    .where(_BALANCES.c.account_id == bindparam("aid"))
    .values(
        raw_fen=_BALANCES.c.raw_fen + bindparam("delta"),
        line_count=_BALANCES.c.line_count + bindparam("n"),
        updated_at=bindparam("now"),
    )
)


def _update_balances(
    session: Session, deltas: Mapping[int, int], counts: Mapping[int, int], now: datetime
) -> None:
    """Phase two: one relative UPDATE per account, in ascending id (see module docstring)."""
    params = [
        {"aid": aid, "delta": deltas[aid], "n": counts[aid], "now": now} for aid in sorted(deltas)
    ]
    # Core on the session's connection: account ids were resolved within the tenant above.
    session.connection().execute(_BALANCE_UPDATE, params)


def _check_minimum(account: Account, raw_before: int, delta: int) -> None:
    if account.min_balance_fen is None:
        return
    normal_delta = delta * account.sign
    if normal_delta >= 0:
        return  # money coming in is always accepted, even on an account below its minimum
    normal_after = (raw_before + delta) * account.sign
    if normal_after < account.min_balance_fen:
        raise InsufficientFunds(
            f"account {account.code} would fall below its minimum",
            account_id=account.id,
            balance_fen=raw_before * account.sign,
            shortfall_fen=account.min_balance_fen - normal_after,
        )


def reverse(
    session: Session,
    entry: Entry,
    *,
    idempotency_key: str,
    actor: Actor,
    now: datetime,
    memo: str = "",
) -> Entry:
    """Post the mirror image of ``entry`` (each line negated) with ``reverses_id`` set."""
    if entry.reverses_id is not None:
        raise Conflict("a reversal cannot itself be reversed; post a new entry", entry_id=entry.id)
    lines = session.scalars(select(Line).where(Line.entry_id == entry.id).order_by(Line.id))
    request = PostingRequest(
        code=f"{entry.code}.reversal",
        lines=tuple(LineSpec(ln.account_id, -ln.amount_fen) for ln in lines),
        idempotency_key=idempotency_key,
        memo=memo or f"reversal of entry {entry.id}",
        reverses_id=entry.id,
        source=entry.source,
    )
    return post(session, request, actor=actor, now=now)
