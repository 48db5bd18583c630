"""Online tap decisions (ARCHITECTURE §6).

The core resolves the credential and checks card status, expiry, blacklist and tenant; then
the enabled modules' ``onecard_authorize_tap`` hooks decide: any deny wins, and if nobody
allows the tap is denied with ``NO_HANDLER`` (silence denies). Postings the allowing modules
propose are posted in the same transaction as the :class:`DeviceTap` row;
``onecard_tap_recorded`` then lets the modules record their own facts (a canteen sale) in that
same transaction. A repeated ``req_id`` from the same device returns the first reply and
changes nothing. The reply is the protocol's `TapDecision` (``down/tap``).

A tap writes no audit event: the audit chain records operator actions, and a device tap's fact
is its :class:`DeviceTap` row (written once per ``(device, req_id)``, never changed) plus the
ledger entries it posted. A per-tap audit event serialised every tap of a tenant on the audit
chain's counter row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, false, insert, literal, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from onecard.device_agents.protocol.codes import ALLOW_REASONS, CredentialKind, ReasonCode
from onecard.platform.actors import Actor
from onecard.platform.cards.models import Card, CardStatus
from onecard.platform.clock import as_utc
from onecard.platform.db.sql import DIALECTS, in_values, read_together, write_last
from onecard.platform.devices.models import DeviceTap
from onecard.platform.devices.services import DeviceRef
from onecard.platform.devices.wire import TapDecision as DecisionMessage
from onecard.platform.devices.wire import TapRequest as TapMessage
from onecard.platform.errors import InsufficientFunds, OneCardError
from onecard.platform.ledger.models import Account, AccountType, Balance
from onecard.platform.ledger.posting import PostingRequest, post

STATUS_REASONS = {
    CardStatus.LOST.value: ReasonCode.CARD_LOST,
    CardStatus.FROZEN.value: ReasonCode.CARD_FROZEN,
    CardStatus.RETURNED.value: ReasonCode.CARD_RETURNED,
    CardStatus.REPLACED.value: ReasonCode.CARD_LOST,
    CardStatus.EXPIRED.value: ReasonCode.CARD_EXPIRED,
}
DISPLAY = {
    ReasonCode.OK: "OK",
    ReasonCode.CARD_UNKNOWN: "Unknown card",
    ReasonCode.CARD_LOST: "Card reported lost",
    ReasonCode.CARD_FROZEN: "Card frozen",
    ReasonCode.CARD_RETURNED: "Card returned",
    ReasonCode.CARD_EXPIRED: "Card expired",
    ReasonCode.INSUFFICIENT_FUNDS: "Insufficient funds",
    ReasonCode.NO_HANDLER: "Not accepted here",
    ReasonCode.DEVICE_DISABLED: "Terminal disabled",
    ReasonCode.LIMIT_REACHED: "Limit reached",
}
PURSE_KIND = "holder.purse"
_FLAG = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True)
class TapRequest:
    """What modules see of a tap (``onecard_authorize_tap(tap=...)``).

    ``session`` is the tap's database session, handed over so that a module can *read* what it
    needs to decide (limits, meal periods, balances). It is read-only for
    ``onecard_authorize_tap``: a hook must not add, change or flush anything through it (the
    platform posts the proposed postings; ``onecard_tap_recorded`` is where a module writes).
    """

    tenant_id: int
    device_id: str
    device_kind: str
    module: str | None
    site_id: int | None
    req_id: str
    card_id: int
    card_no: str
    person_id: int
    amount_fen: int | None
    direction: str | None
    device_time: int
    now: datetime
    credential_kind: str = CredentialKind.CARD_NO.value
    pin_verified: bool = False
    clock_valid: bool = True
    session: Session | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class TapDecision:
    """A module's answer: allow or deny with a reason; postings to make when allowed."""

    allow: bool
    reason: str = ReasonCode.OK.value
    display: str = ""
    postings: tuple[PostingRequest, ...] = ()
    detail: str = ""
    module: str = ""


@dataclass(frozen=True)
class TapOutcome:
    """The reply sent on ``down/tap`` and what the tap hooks are told."""

    req_id: str
    allow: bool
    reason: str
    display: str
    balance_fen: int | None
    entry_ids: tuple[int, ...] = ()
    replayed: bool = False
    detail: str = ""
    request: TapRequest | None = field(default=None, compare=False)

    def message(self) -> DecisionMessage:
        """The ``down/tap`` message."""
        reason = _reason(self.reason)
        allow = self.allow and reason in ALLOW_REASONS
        if self.allow and not allow:
            reason = ReasonCode.INTERNAL_ERROR
        detail = self.detail if _FLAG.fullmatch(self.detail or "") else None
        if detail is None and reason.value != self.reason:
            detail = self.reason.lower() if _FLAG.fullmatch(self.reason.lower()) else None
        return DecisionMessage(
            req_id=self.req_id,
            allow=allow,
            reason=reason,
            detail=detail,
            display=self.display[:64],
            balance=self.balance_fen,
        )


def _reason(reason: str) -> ReasonCode:
    try:
        return ReasonCode(reason)
    except ValueError:
        return ReasonCode.NOT_PERMITTED


def decide(
    session: Session,
    device: DeviceRef,
    tap: TapMessage,
    hooks: Any,
    *,
    now: datetime,
    batch: TapBatch | None = None,
) -> TapOutcome:
    """Decide ``tap`` and record it (caller commits; then calls ``onecard_tap_completed``).

    The reads and the tap row go through Core statements with the tenant written out (the tap
    is the hottest path of the platform: an ORM round per read cost more than the database).
    With ``batch``, the reads come from the batch and the row is written by
    :meth:`TapBatch.write`.
    A tap nobody allows with postings takes two statements: one read (replay, card, purse
    balance: :func:`_facts`) and the tap row; each is a network round trip on PostgreSQL.
    A concurrent decision of the same ``(device, req_id)`` by another bridge raises
    :class:`TapRaced` after this one's postings: the caller rolls back and asks again, and the
    replay check then returns the first decision.
    """
    if batch is not None:
        seen = batch.decided.get((device.pk, tap.req_id))
        if seen is not None:  # the same request twice in one batch: the first one's answer
            return replace(seen, replayed=True, request=None)
        facts = batch.facts_of(device, tap)
    else:
        facts = _facts(session, device, tap)
    if facts.first is not None:
        return facts.first
    card, before = facts.card, facts.balance
    if not device.enabled:
        deny = _deny(ReasonCode.DEVICE_DISABLED)
        return _finish(session, device, tap, card, deny, (), now, balance=before, batch=batch)
    if card is None:
        deny = _deny(ReasonCode.CARD_UNKNOWN)
        return _finish(session, device, tap, None, deny, (), now, balance=None, batch=batch)
    core = _core_checks(card, now)
    if core is not None:
        deny = _deny(core)
        return _finish(session, device, tap, card, deny, (), now, balance=before, batch=batch)
    request = _request(session, device, tap, card, now)
    decision = combine(hooks.onecard_authorize_tap(tap=request) if hooks is not None else [])
    entries: tuple[int, ...] = ()
    if decision.allow and decision.postings:
        try:
            with session.begin_nested():
                entries = _post(session, device, decision.postings, now)
        except InsufficientFunds:
            decision = _deny(ReasonCode.INSUFFICIENT_FUNDS)
        except OneCardError as exc:
            decision = _deny(ReasonCode.NOT_PERMITTED, detail=exc.message)
    # Postings moved the purse: read it again; otherwise the balance read with the card holds.
    after = purse_balance(session, device.tenant_id, card.person_id) if entries else before
    outcome = _finish(
        session, device, tap, card, decision, entries, now, balance=after, batch=batch
    )
    outcome = replace(outcome, request=request)
    if hooks is not None and not outcome.replayed:
        hooks.onecard_tap_recorded(tap=request, decision=outcome, session=session)
        session.flush()
    return outcome


class TapRaced(Exception):
    """Another transaction recorded the same ``(device, req_id)`` first: roll back, retry."""


@dataclass(frozen=True)
class CardFacts:
    """What a tap decision needs of a card (read without loading the ORM object)."""

    id: int
    card_no: str
    person_id: int
    status: str
    expires_at: datetime | None


# Built once: the statement objects keep their compiled form and cache key between taps.
_FIRST_REPLY = select(
    DeviceTap.req_id, DeviceTap.allow, DeviceTap.reason, DeviceTap.entry_ids, DeviceTap.reply
).where(DeviceTap.device_pk == bindparam("pk"), DeviceTap.req_id == bindparam("req_id"))
_PURSE = (
    select(Account.type, Balance.raw_fen)
    .outerjoin(Balance, Balance.account_id == Account.id)
    .where(
        Account.tenant_id == bindparam("tid"),
        Account.owner_type == "person",
        Account.owner_id == bindparam("person_id"),
        Account.kind == PURSE_KIND,
    )
    .limit(1)
)
# Inline: no RETURNING of the new ids, which a single row's insert would otherwise fetch
# (and which cannot be read before the COMMIT that `write_last` sends with the rows).
_INSERT_ROWS = insert(DeviceTap).inline()
_INSERT_TAP = {
    dialect: insert(DeviceTap)
    .on_conflict_do_nothing(index_elements=["device_pk", "req_id"])
    .returning(DeviceTap.id)
    for dialect, insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}


@dataclass(frozen=True)
class _TapFacts:
    """What one read tells about a tap: its earlier decision, its card, the purse balance."""

    first: TapOutcome | None
    card: CardFacts | None
    balance: int | None


def _facts_query(match: Any) -> Any:
    """Replay check, card and purse balance in one statement (outer joins from one row)."""
    one = select(literal(1).label("one")).subquery()
    card_on = and_(Card.tenant_id == bindparam("tid"), match) if match is not None else false()
    purse_on = and_(
        Account.tenant_id == bindparam("tid"),
        Account.owner_type == "person",
        Account.owner_id == Card.person_id,
        Account.kind == PURSE_KIND,
    )
    tap_on = and_(DeviceTap.device_pk == bindparam("pk"), DeviceTap.req_id == bindparam("req_id"))
    joined = (
        one.outerjoin(DeviceTap, tap_on)
        .outerjoin(Card, card_on)
        .outerjoin(Account, purse_on)
        .outerjoin(Balance, Balance.account_id == Account.id)
    )
    return (
        select(
            DeviceTap.req_id,
            DeviceTap.allow,
            DeviceTap.reason,
            DeviceTap.entry_ids,
            DeviceTap.reply,
            Card.id,
            Card.card_no,
            Card.person_id,
            Card.status,
            Card.expires_at,
            Account.type,
            Balance.raw_fen,
        )
        .select_from(joined)
        .limit(1)
    )


_FACTS_BY = {
    CredentialKind.UID: _facts_query(Card.uid == bindparam("value")),
    CredentialKind.CARD_NO: _facts_query(Card.card_no == bindparam("value")),
}
_FACTS_NO_CARD = _facts_query(None)


class TapBatch:
    """Taps decided together in one transaction (the bridge's chunk): the replay check, the
    cards and the purse balances of all of them are read up front, and their rows are
    written at the end by :meth:`write` (one ``executemany``). The cards come with their
    holders' purse balances (outer joins, as in :func:`_facts`). On PostgreSQL the reads
    travel with the transaction's BEGIN and the rows with its COMMIT (`read_together`,
    `write_last`): a chunk of taps nobody posts for costs two network round trips, however
    many taps it holds, where a tap decided on its own costs four; under load the round trips,
    not the database's work, are what a chunk waits for. Pass it to :func:`decide` for each
    tap, then call :meth:`write` and commit.

    A request that another transaction decided meanwhile makes :meth:`write` fail on the
    unique ``(device, req_id)``: the caller rolls back and decides those taps one by one.
    """

    def __init__(self, session: Session, taps: Sequence[tuple[DeviceRef, TapMessage]]) -> None:
        self.rows: list[dict[str, Any]] = []
        self.decided: dict[tuple[int, str], TapOutcome] = {}
        conn = session.connection()
        keys = [(d.pk, t.req_id) for d, t in taps]
        replies = _reply_reads(conn.dialect.name, keys)
        cards = _card_reads(conn.dialect.name, taps)
        rows = read_together(conn, replies + [(stmt, params) for _k, stmt, params in cards])
        self._replies = _replies(rows[: len(replies)], set(keys))
        found = zip([kind for kind, _s, _p in cards], rows[len(replies) :], strict=True)
        self._cards, self._balances = _cards(found)

    def facts_of(self, device: DeviceRef, tap: TapMessage) -> _TapFacts:
        """What :func:`_facts` would read for ``tap``, from the batch's reads."""
        first = self._replies.get((device.pk, tap.req_id))
        card = self._cards.get((device.tenant_id, *_credential(tap)))
        if card is None:
            return _TapFacts(first, None, None)
        return _TapFacts(first, card, self._balances.get((device.tenant_id, card.person_id)))

    def write(self, session: Session) -> None:
        """Insert the decided taps' rows, as the transaction's last statement: the caller
        commits next (on PostgreSQL the COMMIT goes with the rows, `write_last`). A plain
        insert: the replay check ran in this transaction, so only a concurrent decision can
        collide, and that fails the batch."""
        session.flush()  # what the ORM holds (a module's writes) goes first, in this transaction
        write_last(session.connection(), _INSERT_ROWS, self.rows)
        self.rows = []


def _credential(tap: TapMessage) -> tuple[CredentialKind, str]:
    kind, value = tap.credential.kind, tap.credential.value
    return kind, value.upper() if kind is CredentialKind.UID else value


# The batch's statements are built once per dialect, with list parameters: building a select
# and its IN lists for every chunk cost more CPU than running it. On PostgreSQL the replay
# check binds the taps' devices and request ids as two arrays (a superset of the pairs,
# narrowed in Python), so its text stays the same for any count (see `in_values`).
_REPLIES = {
    "postgresql": select(DeviceTap.device_pk, *_FIRST_REPLY.selected_columns).where(
        in_values(DeviceTap.device_pk, "pks", "postgresql"),
        in_values(DeviceTap.req_id, "req_ids", "postgresql"),
    ),
    "sqlite": select(DeviceTap.device_pk, *_FIRST_REPLY.selected_columns).where(
        tuple_(DeviceTap.device_pk, DeviceTap.req_id).in_(bindparam("keys", expanding=True))
    ),
}


def _batch_cards_query(column: Any, dialect: str) -> Any:
    purse_on = and_(
        Account.tenant_id == Card.tenant_id,
        Account.owner_type == "person",
        Account.owner_id == Card.person_id,
        Account.kind == PURSE_KIND,
    )
    return (
        select(
            Card.tenant_id, column, Card.id, Card.card_no, Card.person_id, Card.status,
            Card.expires_at, Account.type, Balance.raw_fen,
        )
        .outerjoin(Account, purse_on)
        .outerjoin(Balance, Balance.account_id == Account.id)
        .where(
            in_values(Card.tenant_id, "tenants", dialect), in_values(column, "values", dialect)
        )
    )  # fmt: skip


_BATCH_CARDS = {
    dialect: {
        CredentialKind.UID: _batch_cards_query(Card.uid, dialect),
        CredentialKind.CARD_NO: _batch_cards_query(Card.card_no, dialect),
    }
    for dialect in DIALECTS
}


def _reply_reads(dialect: str, keys: list[tuple[int, str]]) -> list[tuple[Any, dict[str, Any]]]:
    """The replay check's statements for ``keys`` (``(device pk, req_id)``), 500 a statement;
    on PostgreSQL a superset of the pairs (narrowed by :func:`_replies`)."""
    reads: list[tuple[Any, dict[str, Any]]] = []
    for i in range(0, len(keys), 500):
        part = keys[i : i + 500]
        if dialect == "postgresql":
            params = {"pks": sorted({k[0] for k in part}), "req_ids": sorted({k[1] for k in part})}
            reads.append((_REPLIES["postgresql"], params))
        else:
            reads.append((_REPLIES["sqlite"], {"keys": part}))
    return reads


def _replies(
    results: list[list[Any]], wanted: set[tuple[int, str]]
) -> dict[tuple[int, str], TapOutcome]:
    out: dict[tuple[int, str], TapOutcome] = {}
    for rows in results:
        for pk, req_id, allow, reason, entry_ids, reply in rows:
            if (pk, req_id) in wanted:
                out[(pk, req_id)] = _replayed(req_id, allow, reason, entry_ids, reply)
    return out


def _card_reads(
    dialect: str, taps: Sequence[tuple[DeviceRef, TapMessage]]
) -> list[tuple[CredentialKind, Any, dict[str, Any]]]:
    """The statements that read the cards the taps name, with their holders' purse balances:
    one per credential kind and 500 values."""
    wanted: dict[CredentialKind, set[str]] = {}
    tenants = sorted({d.tenant_id for d, _t in taps})
    for _d, t in taps:
        kind, value = _credential(t)
        wanted.setdefault(kind, set()).add(value)
    reads = []
    for kind, stmt in _BATCH_CARDS[dialect].items():
        values = sorted(wanted.get(kind, ()))
        for i in range(0, len(values), 500):
            reads.append((kind, stmt, {"tenants": tenants, "values": values[i : i + 500]}))
    return reads


def _cards(
    results: Iterable[tuple[CredentialKind, list[Any]]],
) -> tuple[dict[tuple[int, CredentialKind, str], CardFacts], dict[tuple[int, int], int | None]]:
    """The cards read by :func:`_card_reads`' statements, and their holders' purse balances
    (signed; a holder without a purse is left out)."""
    cards: dict[tuple[int, CredentialKind, str], CardFacts] = {}
    balances: dict[tuple[int, int], int | None] = {}
    for kind, rows in results:
        for row in rows:
            tid, found, cid, no, person, status, expires, account_type, raw = row
            at = as_utc(expires) if expires else None
            cards[(tid, kind, str(found))] = CardFacts(cid, no, person, status, at)
            if account_type is not None:
                balances[(tid, person)] = (raw or 0) * AccountType(account_type).sign
    return cards, balances


def _facts(session: Session, device: DeviceRef, tap: TapMessage) -> _TapFacts:
    kind, value = _credential(tap)
    stmt = _FACTS_BY.get(kind, _FACTS_NO_CARD)
    params = {"tid": device.tenant_id, "pk": device.pk, "req_id": tap.req_id, "value": value}
    row = session.connection().execute(stmt, params).one()
    first = _replayed(row[0], row[1], row[2], row[3], row[4]) if row[0] is not None else None
    if row[5] is None:
        return _TapFacts(first, None, None)
    expires = as_utc(row[9]) if row[9] else None
    card = CardFacts(row[5], row[6], row[7], row[8], expires)
    balance = (row[11] or 0) * AccountType(row[10]).sign if row[10] is not None else None
    return _TapFacts(first, card, balance)


def _first_reply(session: Session, device: DeviceRef, req_id: str) -> TapOutcome | None:
    params = {"pk": device.pk, "req_id": req_id}
    row = session.connection().execute(_FIRST_REPLY, params).first()
    return None if row is None else _replayed(row[0], row[1], row[2], row[3], row[4])


def combine(decisions: Sequence[Any]) -> TapDecision:
    """Any deny wins; no allow at all denies with ``NO_HANDLER``."""
    given = [d for d in decisions if d is not None]
    denies = [d for d in given if not d.allow]
    if denies:
        return denies[0]  # type: ignore[no-any-return]
    if not given:
        return _deny(ReasonCode.NO_HANDLER)
    postings = tuple(p for d in given for p in d.postings)
    head = given[0]
    return TapDecision(True, head.reason, head.display, postings, head.detail, head.module)


def _deny(reason: ReasonCode, *, detail: str = "") -> TapDecision:
    return TapDecision(False, reason.value, DISPLAY.get(reason, reason.value), (), detail)


def _display(reason: str) -> str:
    try:
        return DISPLAY.get(ReasonCode(reason), reason)
    except ValueError:
        return reason


def _core_checks(card: CardFacts, now: datetime) -> ReasonCode | None:
    if card.status != CardStatus.ACTIVE.value:
        return STATUS_REASONS.get(card.status, ReasonCode.CARD_LOST)
    if card.expires_at is not None and card.expires_at <= now:
        return ReasonCode.CARD_EXPIRED
    return None


def _request(
    session: Session, d: DeviceRef, tap: TapMessage, card: CardFacts, now: datetime
) -> TapRequest:
    return TapRequest(
        tenant_id=d.tenant_id,
        device_id=d.device_id,
        device_kind=d.kind,
        module=d.module,
        site_id=d.site_id,
        req_id=tap.req_id,
        card_id=card.id,
        card_no=card.card_no,
        person_id=card.person_id,
        amount_fen=tap.amount,
        direction=tap.direction.value if tap.direction is not None else None,
        device_time=tap.device_time,
        now=now,
        credential_kind=tap.credential.kind.value,
        pin_verified=tap.extra.get("pin_verified") is True,
        clock_valid=tap.clock_valid,
        session=session,
    )


def _post(
    session: Session, d: DeviceRef, postings: Sequence[PostingRequest], now: datetime
) -> tuple[int, ...]:
    actor = Actor(type="device", id=d.device_id, tenant_id=d.tenant_id)
    return tuple(post(session, p, actor=actor, now=now).id for p in postings)


def _finish(
    session: Session,
    d: DeviceRef,
    tap: TapMessage,
    card: CardFacts | None,
    decision: TapDecision,
    entries: tuple[int, ...],
    now: datetime,
    *,
    balance: int | None,
    batch: TapBatch | None = None,
) -> TapOutcome:
    outcome = TapOutcome(
        tap.req_id,
        decision.allow,
        decision.reason,
        decision.display or _display(decision.reason),
        balance,
        entries,
        detail=decision.detail,
    )
    values = {
        "tenant_id": d.tenant_id,
        "device_pk": d.pk,
        "req_id": tap.req_id,
        "card_no": (card.card_no if card else tap.credential.value)[:32],
        "card_id": card.id if card else None,
        "allow": decision.allow,
        "reason": decision.reason[:40],
        "amount_fen": tap.amount,
        "entry_ids": list(entries),
        "reply": outcome.message().model_dump(mode="json", by_alias=True, exclude_none=True),
        "decided_at": now,
    }
    if batch is not None:
        batch.rows.append(values)
        batch.decided[(d.pk, tap.req_id)] = outcome
        return outcome
    conn = session.connection()
    if conn.execute(_INSERT_TAP[conn.dialect.name], values).first() is None:
        # Another bridge decided the same request since the replay check. Without postings
        # nothing of ours needs undoing: answer with its decision; else roll back and retry.
        if entries:
            raise TapRaced(tap.req_id)
        first = _first_reply(session, d, tap.req_id)
        assert first is not None
        return first
    return outcome


def purse_balance(session: Session, tenant_id: int, person_id: int) -> int | None:
    """The holder's purse balance in fen (what a terminal displays); ``None`` without a purse."""
    if session.new or session.dirty:
        session.flush()  # the reads below go past the ORM: a module's pending writes first
    params = {"tid": tenant_id, "person_id": person_id}
    row = session.connection().execute(_PURSE, params).first()
    if row is None:
        return None
    return (row[1] or 0) * AccountType(row[0]).sign


def _replayed(
    req_id: str, allow: bool, reason: str, entry_ids: list[Any], r: dict[str, Any]
) -> TapOutcome:
    balance = r.get("balance")
    return TapOutcome(
        req_id,
        allow,
        reason,
        str(r.get("display", "")),
        balance if isinstance(balance, int) else None,
        tuple(entry_ids),
        replayed=True,
        detail=str(r.get("detail", "")),
    )


def _from_row(row: DeviceTap) -> TapOutcome:
    return _replayed(row.req_id, row.allow, row.reason, row.entry_ids, row.reply)


def reply_of(row: DeviceTap) -> DecisionMessage:
    """The stored ``down/tap`` reply of a decided tap."""
    return DecisionMessage.model_validate(row.reply)
