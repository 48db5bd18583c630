"""The card state machine: which actions each state allows, and that each one is audited.

active ──freeze──> frozen ──unfreeze──> active
   └─report_loss─> lost ──unfreeze──> active        (frozen ──report_loss──> lost)
active | lost | frozen ──replace | return | expire──> replaced | returned | expired
"""

import itertools

import pytest

from onecard.platform.audit.models import AuditEvent
from onecard.platform.cards import blacklist, lifecycle
from onecard.platform.errors import InvalidTransition
from onecard.testing.fixtures import unique

STATES = ("active", "lost", "frozen", "replaced", "returned", "expired")
ACTIONS = ("report_loss", "freeze", "unfreeze", "replace", "return", "expire")

# The whole table, written out: (state, action) -> state afterwards. Anything else is refused.
ALLOWED = {
    ("active", "report_loss"): "lost",
    ("active", "freeze"): "frozen",
    ("active", "replace"): "replaced",
    ("active", "return"): "returned",
    ("active", "expire"): "expired",
    ("lost", "unfreeze"): "active",
    ("lost", "replace"): "replaced",
    ("lost", "return"): "returned",
    ("lost", "expire"): "expired",
    ("frozen", "report_loss"): "lost",
    ("frozen", "unfreeze"): "active",
    ("frozen", "replace"): "replaced",
    ("frozen", "return"): "returned",
    ("frozen", "expire"): "expired",
}
REFUSED = sorted(set(itertools.product(STATES, ACTIONS)) - set(ALLOWED))


@pytest.fixture
def act(session, system_actor, now):
    """Factory: perform ``action`` on ``card`` through the card centre's services."""

    def _act(card, action):
        if action == "report_loss":
            return lifecycle.report_loss(session, card, actor=system_actor, now=now)
        if action == "freeze":
            return lifecycle.freeze(session, card, actor=system_actor, now=now, reason="dispute")
        if action == "unfreeze":
            return lifecycle.unfreeze(session, card, actor=system_actor, now=now)
        if action == "replace":
            return lifecycle.replace(session, card, unique("N"), actor=system_actor, now=now)
        if action == "return":
            return lifecycle.return_card(session, card, actor=system_actor, now=now)
        return lifecycle.expire(session, card, actor=system_actor, now=now)

    return _act


@pytest.fixture
def card_in(make_person, make_card, act):
    """Factory: a card brought into ``state`` by the actions a card centre would take."""
    route = {
        "active": (),
        "lost": ("report_loss",),
        "frozen": ("freeze",),
        "replaced": ("replace",),
        "returned": ("return",),
        "expired": ("expire",),
    }

    def _card_in(state):
        card = make_card(make_person())
        for action in route[state]:
            act(card, action)
        assert card.status == state
        return card

    return _card_in


@pytest.mark.parametrize(("state", "action"), sorted(ALLOWED))
def test_allowed_transition_moves_the_card(card_in, act, state, action):
    card = card_in(state)

    act(card, action)

    assert card.status == ALLOWED[state, action]


@pytest.mark.parametrize(("state", "action"), REFUSED)
def test_refused_transition_raises_and_changes_nothing(
    session, card_in, act, count_rows, state, action
):
    card = card_in(state)
    versions, events = blacklist.current_version(session), count_rows(AuditEvent)
    changed_at = card.status_changed_at

    with pytest.raises(InvalidTransition):
        act(card, action)

    assert (card.status, card.status_changed_at) == (state, changed_at)
    assert blacklist.current_version(session) == versions
    assert count_rows(AuditEvent) == events


@pytest.mark.parametrize(("state", "action"), sorted(ALLOWED))
def test_every_transition_is_audited_as_card_action(card_in, act, audit_types, state, action):
    card = card_in(state)

    act(card, action)

    assert audit_types("card", card.id)[-1] == f"card.{action}"


def test_issuing_a_card_is_audited(make_person, make_card, audit_types):
    card = make_card(make_person())

    assert audit_types("card", card.id) == ["card.issued"]
