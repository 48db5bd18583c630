"""``/cards``: issue, report loss, freeze, unfreeze (four-eyes), replace, return; blacklist."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from onecard.platform.approvals import services as approvals
from onecard.platform.cards import blacklist, lifecycle
from onecard.platform.cards.models import Card
from onecard.platform.people.services import get_person
from onecard.web.api.base import Call, Out, QueryModel, dump, endpoint, paged
from onecard.web.api.common import approval_response


class CardIn(BaseModel):
    """A card to issue."""

    model_config = ConfigDict(extra="forbid", strict=True)
    card_no: str = Field(min_length=4, max_length=32, pattern=r"^[0-9A-Za-z]+$")
    kind: str = Field(default="cpu", pattern=r"^(cpu|m1|id|qr|mobile)$")
    uid: str | None = Field(default=None, pattern=r"^[0-9A-F]{8,32}$")
    deposit_fen: int = Field(default=0, ge=0, le=1_000_000)
    expires_at: datetime | None = None


class CardOut(Out):
    """A card."""

    id: int
    card_no: str
    person_id: int
    kind: str
    uid: str | None
    status: str
    deposit_fen: int
    issued_at: datetime
    expires_at: datetime | None
    status_changed_at: datetime
    replaced_by_id: int | None


class FreezeIn(BaseModel):
    """Why the card is frozen."""

    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str = Field(default="", max_length=200)


class ReplaceIn(BaseModel):
    """The replacement card."""

    model_config = ConfigDict(extra="forbid", strict=True)
    new_card_no: str = Field(min_length=4, max_length=32, pattern=r"^[0-9A-Za-z]+$")
    uid: str | None = Field(default=None, pattern=r"^[0-9A-F]{8,32}$")


class CardsQuery(QueryModel):
    """Filters of the card list."""

    card_no: str | None = Field(default=None, max_length=32)
    person_id: int | None = None
    status: str | None = Field(default=None, max_length=10)
    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0)


@endpoint(
    "POST", "/people/{person_id}/cards", tag="cards", body=CardIn, response=CardOut, status=201
)
def issue(call: Call) -> Any:
    """Issue a card to a person (takes the deposit in cash when there is one)."""
    person = get_person(call.session, call.path["person_id"], actor=call.actor)
    spec = lifecycle.NewCard(**call.body.model_dump())
    return dump(
        CardOut, lifecycle.issue_card(call.session, person, spec, actor=call.actor, now=call.now)
    )


@endpoint(
    "GET",
    "/cards",
    tag="cards",
    query=CardsQuery,
    response=CardOut,
    list_response=True,
    permission="cards.view",
)
def list_cards(call: Call) -> Any:
    """List cards (paginated)."""
    q: CardsQuery = call.query
    stmt = select(Card)
    if q.card_no:
        stmt = stmt.where(Card.card_no == q.card_no)
    if q.person_id is not None:
        get_person(call.session, q.person_id, actor=call.actor)
        stmt = stmt.where(Card.person_id == q.person_id)
    if q.status:
        stmt = stmt.where(Card.status == q.status)
    if call.actor.org_unit_scope is not None:
        from onecard.platform.people.models import Person

        stmt = stmt.join(Person, Person.id == Card.person_id).where(
            Person.org_unit_id.in_(call.actor.org_unit_scope)
        )
    total = call.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = call.session.scalars(stmt.order_by(Card.id).limit(q.limit).offset(q.offset))
    return paged([dump(CardOut, c) for c in rows], total, q.limit, q.offset)


@endpoint("GET", "/cards/{card_id}", tag="cards", response=CardOut)
def get_card(call: Call) -> Any:
    """Read one card with its blacklist history."""
    card = lifecycle.get_card(call.session, call.path["card_id"], actor=call.actor)
    history = [
        {
            "version": h.version,
            "op": h.op,
            "reason": h.reason,
            "created_at": h.created_at.isoformat(),
        }
        for h in blacklist.history(call.session, card.id)
    ]
    return {**dump(CardOut, card), "blacklist_history": history}


def _card(call: Call) -> Card:
    return lifecycle.get_card(call.session, call.path["card_id"], actor=call.actor)


@endpoint("POST", "/cards/{card_id}/report-loss", tag="cards", response=CardOut)
def report_loss(call: Call) -> Any:
    """挂失: report the card lost; devices will refuse it."""
    return dump(
        CardOut, lifecycle.report_loss(call.session, _card(call), actor=call.actor, now=call.now)
    )


@endpoint("POST", "/cards/{card_id}/freeze", tag="cards", body=FreezeIn, response=CardOut)
def freeze(call: Call) -> Any:
    """Freeze the card."""
    return dump(
        CardOut,
        lifecycle.freeze(
            call.session, _card(call), actor=call.actor, now=call.now, reason=call.body.reason
        ),
    )


@endpoint("POST", "/cards/{card_id}/unfreeze", tag="cards", status=202)
def unfreeze(call: Call) -> Any:
    """解挂: accept a lost or frozen card again — a blacklist removal, so four-eyes."""
    assert call.tenant is not None
    card = _card(call)
    outcome = approvals.submit(
        call.session,
        call.tenant,
        "card.unfreeze",
        {"card_id": card.id},
        actor=call.actor,
        now=call.now,
        summary=f"unfreeze card {card.card_no}",
        idempotency_key=call.idempotency_key,
    )
    return approval_response(outcome)


@endpoint(
    "POST", "/cards/{card_id}/replace", tag="cards", body=ReplaceIn, response=CardOut, status=201
)
def replace(call: Call) -> Any:
    """补卡: issue a replacement; deposit and balance carry over; the old card is blacklisted."""
    new = lifecycle.replace(
        call.session,
        _card(call),
        call.body.new_card_no,
        actor=call.actor,
        now=call.now,
        uid=call.body.uid,
    )
    return dump(CardOut, new)


@endpoint("POST", "/cards/{card_id}/return", tag="cards")
def return_card(call: Call) -> Any:
    """退卡: take the card back, refund deposit and (last card) balance; four-eyes over limit."""
    assert call.tenant is not None
    card = _card(call)
    call.actor.ensure("cards.return")
    quote = lifecycle.quote_return(call.session, card, now=call.now)
    outcome = approvals.submit(
        call.session,
        call.tenant,
        "card.return",
        {"card_id": card.id},
        actor=call.actor,
        now=call.now,
        amount_fen=quote.cash_fen,
        idempotency_key=call.idempotency_key,
        summary=f"return card {card.card_no}, pay {quote.cash_fen} fen",
    )
    return approval_response(outcome)


class BlacklistQuery(QueryModel):
    """``from_version``: the version a device holds; omit for a full snapshot."""

    from_version: int | None = Field(default=None, ge=0)


@endpoint("GET", "/blacklist", tag="cards", query=BlacklistQuery, permission="cards.view")
def get_blacklist(call: Call) -> Any:
    """The card blacklist as a delta after ``from_version`` or as a snapshot."""
    q: BlacklistQuery = call.query
    if q.from_version is None:
        version, cards = blacklist.snapshot(call.session)
        return {"kind": "snapshot", "version": version, "cards": cards}
    d = blacklist.delta(call.session, q.from_version)
    return {
        "kind": "delta",
        "from": d.from_version,
        "to": d.to_version,
        "add": list(d.add),
        "remove": list(d.remove),
    }
