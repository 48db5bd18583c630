"""The card state machine.

::

    issue ──> active ──freeze──> frozen ──unfreeze──> active
                 │ └─report_loss─> lost ──unfreeze──> active
                 ├─replace──> replaced   (new card issued, deposit carried, old blacklisted)
                 ├─return───> returned   (deposit and balance refunded, blacklisted)
                 └─expire───> expired

Every transition is audited. A transition that changes whether devices accept the card appends
a version to the tenant's card blacklist (:mod:`onecard.platform.cards.blacklist`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.platform.actors import Actor
from onecard.platform.audit.record import record
from onecard.platform.cards.blacklist import append_change
from onecard.platform.cards.models import Card, CardKind, CardStatus
from onecard.platform.db.tenancy import get_scoped
from onecard.platform.errors import Conflict, InvalidTransition, NotFound, ValidationFailed
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import (
    balance_of,
    holder_account,
    holder_accounts,
    tenant_account,
)
from onecard.platform.ledger.posting import LineSpec, PostingRequest, post
from onecard.platform.people.models import Person

S = CardStatus
ACCEPTED = frozenset({S.ACTIVE})
TERMINAL = frozenset({S.REPLACED, S.RETURNED, S.EXPIRED})
TRANSITIONS: dict[str, tuple[frozenset[CardStatus], CardStatus]] = {
    "report_loss": (frozenset({S.ACTIVE, S.FROZEN}), S.LOST),
    "unfreeze": (frozenset({S.LOST, S.FROZEN}), S.ACTIVE),
    "freeze": (frozenset({S.ACTIVE}), S.FROZEN),
    "replace": (frozenset({S.ACTIVE, S.LOST, S.FROZEN}), S.REPLACED),
    "return": (frozenset({S.ACTIVE, S.LOST, S.FROZEN}), S.RETURNED),
    "expire": (frozenset({S.ACTIVE, S.LOST, S.FROZEN}), S.EXPIRED),
}
CARD_NO_RE = re.compile(r"^[0-9A-Za-z]{4,32}$")
UID_RE = re.compile(r"^[0-9A-F]{8,32}$")


@dataclass(frozen=True)
class NewCard:
    """What the card centre knows when it issues a card."""

    card_no: str
    kind: str = CardKind.CPU.value
    uid: str | None = None
    deposit_fen: int = 0
    expires_at: datetime | None = None


def get_card(session: Session, card_id: int, *, actor: Actor) -> Card:
    """The card ``card_id`` of a person visible to ``actor``; :class:`NotFound` otherwise."""
    from onecard.platform.people.services import get_person

    actor.ensure("cards.view")
    card = get_scoped(session, Card, card_id)
    if card is None:
        raise NotFound(f"card {card_id} not found")
    get_person(session, card.person_id, actor=actor)  # data scope of the holder
    return card


def issue_card(
    session: Session, person: Person, spec: NewCard, *, actor: Actor, now: datetime
) -> Card:
    """Issue an active card to ``person``, taking its deposit in cash when there is one."""
    actor.ensure("cards.issue")
    _validate_new_card(session, spec)
    card = Card(
        person_id=person.id,
        card_no=spec.card_no,
        kind=spec.kind,
        uid=spec.uid,
        status=S.ACTIVE.value,
        deposit_fen=spec.deposit_fen,
        issued_at=now,
        expires_at=spec.expires_at,
        status_changed_at=now,
    )
    session.add(card)
    session.flush()
    holder_accounts(session, person.id, now=now)  # a card holder always has purses
    if spec.deposit_fen:
        ops.take_deposit(
            session,
            person.id,
            spec.deposit_fen,
            actor=actor,
            now=now,
            idempotency_key=f"card:{card.id}:deposit",
        )
    record(
        session,
        "card.issued",
        actor=actor,
        now=now,
        object_type="card",
        object_id=card.id,
        data={
            "card_no": card.card_no,
            "kind": card.kind,
            "person_id": person.id,
            "deposit_fen": spec.deposit_fen,
        },
    )
    return card


def _validate_new_card(session: Session, spec: NewCard) -> None:
    if not CARD_NO_RE.match(spec.card_no):
        raise ValidationFailed("card_no must be 4-32 letters or digits", field="card_no")
    if spec.kind not in {k.value for k in CardKind}:
        raise ValidationFailed(f"unknown card kind {spec.kind}", field="kind")
    if spec.uid is not None and not UID_RE.match(spec.uid):
        raise ValidationFailed("uid must be 8-32 upper-case hex digits", field="uid")
    if isinstance(spec.deposit_fen, bool) or not 0 <= spec.deposit_fen <= 1_000_000:
        raise ValidationFailed("deposit_fen must be between 0 and 1000000", field="deposit_fen")
    if session.scalar(select(Card.id).where(Card.card_no == spec.card_no)) is not None:
        raise Conflict(f"card number {spec.card_no} already exists", field="card_no")


def transition(
    session: Session, card: Card, action: str, *, actor: Actor, now: datetime, reason: str = ""
) -> Card:
    """Move ``card`` by ``action`` (a key of :data:`TRANSITIONS`), versioning the blacklist."""
    allowed_from, target = TRANSITIONS[action]
    before = CardStatus(card.status)
    if before not in allowed_from:
        raise InvalidTransition(
            f"cannot {action.replace('_', ' ')} a {before.value} card",
            card_status=before.value,
            action=action,
        )
    card.status, card.status_changed_at = target.value, now
    if (before in ACCEPTED) != (target in ACCEPTED):
        append_change(session, card, add=target not in ACCEPTED, reason=reason or action, now=now)
    record(
        session,
        f"card.{action}",
        actor=actor,
        now=now,
        object_type="card",
        object_id=card.id,
        data={"from": before.value, "to": target.value, "reason": reason},
    )
    session.flush()
    return card


def report_loss(session: Session, card: Card, *, actor: Actor, now: datetime) -> Card:
    """挂失: the holder reports the card lost; devices start refusing it."""
    actor.ensure("cards.report_loss")
    return transition(session, card, "report_loss", actor=actor, now=now)


def freeze(session: Session, card: Card, *, actor: Actor, now: datetime, reason: str = "") -> Card:
    """冻结: the card centre stops the card (e.g. a dispute)."""
    actor.ensure("cards.freeze")
    return transition(session, card, "freeze", actor=actor, now=now, reason=reason)


def unfreeze(session: Session, card: Card, *, actor: Actor, now: datetime) -> Card:
    """解挂: accept a lost or frozen card again (a blacklist removal: four-eyes upstream)."""
    actor.ensure("cards.unfreeze")
    return transition(session, card, "unfreeze", actor=actor, now=now)


def expire(session: Session, card: Card, *, actor: Actor, now: datetime) -> Card:
    """The card reached its end of validity (or its holder left)."""
    actor.ensure("cards.freeze")
    return transition(session, card, "expire", actor=actor, now=now)


def replace(
    session: Session,
    card: Card,
    new_card_no: str,
    *,
    actor: Actor,
    now: datetime,
    uid: str | None = None,
) -> Card:
    """补卡: issue ``new_card_no`` to the same holder; deposit and balance carry over.

    Balances live on the holder's accounts, not on the card, so they carry by construction; the
    deposit moves to the new card without touching money. Returns the new card.
    """
    actor.ensure("cards.replace")
    spec = NewCard(card_no=new_card_no, kind=card.kind, uid=uid, expires_at=card.expires_at)
    _validate_new_card(session, spec)  # before any change: a refusal leaves the old card as it was
    transition(session, card, "replace", actor=actor, now=now)
    new = Card(
        person_id=card.person_id,
        card_no=new_card_no,
        kind=card.kind,
        uid=uid,
        status=S.ACTIVE.value,
        deposit_fen=card.deposit_fen,
        issued_at=now,
        expires_at=card.expires_at,
        status_changed_at=now,
    )
    session.add(new)
    session.flush()
    card.replaced_by_id, card.deposit_fen = new.id, 0
    record(
        session,
        "card.issued",
        actor=actor,
        now=now,
        object_type="card",
        object_id=new.id,
        data={"card_no": new.card_no, "replaces": card.id, "person_id": card.person_id},
    )
    return new


@dataclass(frozen=True)
class ReturnQuote:
    """What returning a card pays back, in fen."""

    deposit_fen: int
    purse_fen: int
    subsidy_fen: int

    @property
    def cash_fen(self) -> int:
        """Cash handed to the holder (deposit and purse; subsidies are reclaimed, not paid)."""
        return self.deposit_fen + self.purse_fen


def quote_return(session: Session, card: Card, *, now: datetime) -> ReturnQuote:
    """The refund of :func:`return_card` if done now (purse only with the last live card)."""
    last = not _other_live_cards(session, card)
    purse = holder_account(session, card.person_id, ops.PURSE, now=now)
    subsidy = holder_account(session, card.person_id, ops.SUBSIDY, now=now)
    return ReturnQuote(
        deposit_fen=card.deposit_fen,
        purse_fen=max(balance_of(session, purse), 0) if last else 0,
        subsidy_fen=max(balance_of(session, subsidy), 0) if last else 0,
    )


def _other_live_cards(session: Session, card: Card) -> bool:
    stmt = select(Card.id).where(
        Card.person_id == card.person_id,
        Card.id != card.id,
        Card.status.in_([S.ACTIVE.value, S.LOST.value, S.FROZEN.value]),
    )
    return session.scalar(stmt.limit(1)) is not None


def return_card(session: Session, card: Card, *, actor: Actor, now: datetime) -> ReturnQuote:
    """退卡: blacklist the card, pay back its deposit and, with the last card, the purse.

    The subsidy balance goes back to the subsidy expense account (subsidies are not cash).
    """
    actor.ensure("cards.return")
    quote = quote_return(session, card, now=now)
    transition(session, card, "return", actor=actor, now=now)
    key = f"card:{card.id}:return"
    if quote.deposit_fen:
        ops.release_deposit(
            session,
            card.person_id,
            quote.deposit_fen,
            actor=actor,
            now=now,
            idempotency_key=f"{key}:deposit",
        )
    if quote.purse_fen:
        ops.refund(
            session,
            card.person_id,
            quote.purse_fen,
            actor=actor,
            now=now,
            idempotency_key=f"{key}:purse",
            memo="card returned",
        )
    if quote.subsidy_fen:
        _reclaim_subsidy(session, card, quote.subsidy_fen, actor=actor, now=now, key=key)
    card.deposit_fen = 0
    return quote


def _reclaim_subsidy(
    session: Session, card: Card, amount: int, *, actor: Actor, now: datetime, key: str
) -> None:
    subsidy = holder_account(session, card.person_id, ops.SUBSIDY, now=now)
    expense = tenant_account(session, "subsidy_expense")
    post(
        session,
        PostingRequest(
            code="subsidy.reclaim",
            idempotency_key=f"{key}:subsidy",
            lines=(LineSpec(subsidy.id, amount), LineSpec(expense.id, -amount)),
        ),
        actor=actor,
        now=now,
    )


def stop_all_cards(session: Session, person: Person, *, actor: Actor, now: datetime) -> None:
    """Expire every card of ``person`` that devices could still accept or that may come back."""
    cards = session.scalars(select(Card).where(Card.person_id == person.id))
    for card in cards:
        if CardStatus(card.status) not in TERMINAL:
            transition(session, card, "expire", actor=actor, now=now, reason="person_deleted")
