"""The versioned card blacklist: which transitions add a version, and what devices receive."""

import pytest

from onecard.platform.cards import blacklist, lifecycle


@pytest.fixture
def card(make_person, make_card):
    return make_card(make_person(), card_no="C0000001")


@pytest.fixture
def changes(session):
    """Factory: a card's blacklist history as ``[(version, op, reason), ...]``."""
    return lambda card: [(c.version, c.op, c.reason) for c in blacklist.history(session, card.id)]


def test_issued_card_is_not_on_the_blacklist(session, card, changes):
    assert changes(card) == []
    assert blacklist.snapshot(session) == (0, [])


def test_reporting_a_card_lost_adds_it_to_the_blacklist(session, card, changes, system_actor, now):
    lifecycle.report_loss(session, card, actor=system_actor, now=now)

    assert changes(card) == [(1, "add", "report_loss")]
    assert blacklist.current_version(session) == 1


def test_unfreezing_a_lost_card_removes_it_from_the_blacklist(
    session, card, changes, system_actor, now
):
    lifecycle.report_loss(session, card, actor=system_actor, now=now)

    lifecycle.unfreeze(session, card, actor=system_actor, now=now)

    assert changes(card) == [(1, "add", "report_loss"), (2, "remove", "unfreeze")]


def test_freezing_adds_the_card_with_the_given_reason(session, card, changes, system_actor, now):
    lifecycle.freeze(session, card, actor=system_actor, now=now, reason="dispute")

    assert changes(card) == [(1, "add", "dispute")]


def test_reporting_a_frozen_card_lost_adds_no_version(session, card, changes, system_actor, now):
    lifecycle.freeze(session, card, actor=system_actor, now=now)

    lifecycle.report_loss(session, card, actor=system_actor, now=now)

    assert card.status == "lost"
    assert [op for _, op, _ in changes(card)] == ["add"]
    assert blacklist.current_version(session) == 1


def test_expiring_a_lost_card_adds_no_version(session, card, changes, system_actor, now):
    lifecycle.report_loss(session, card, actor=system_actor, now=now)

    lifecycle.expire(session, card, actor=system_actor, now=now)

    assert [op for _, op, _ in changes(card)] == ["add"]


def test_expiring_an_active_card_adds_it_to_the_blacklist(
    session, card, changes, system_actor, now
):
    lifecycle.expire(session, card, actor=system_actor, now=now)

    assert changes(card) == [(1, "add", "expire")]


def test_versions_count_up_without_gaps_across_cards(
    session, make_person, make_card, system_actor, now
):
    cards = [make_card(make_person()) for _ in range(3)]

    versions = []
    for lost in cards:
        lifecycle.report_loss(session, lost, actor=system_actor, now=now)
        versions.append(blacklist.current_version(session))

    assert versions == [1, 2, 3]


@pytest.fixture
def three_changes(session, make_person, make_card, system_actor, now):
    """v1: card A lost; v2: card B lost; v3: card A found again (unfrozen)."""
    a = make_card(make_person(), card_no="A0000001")
    b = make_card(make_person(), card_no="B0000002")
    lifecycle.report_loss(session, a, actor=system_actor, now=now)
    lifecycle.report_loss(session, b, actor=system_actor, now=now)
    lifecycle.unfreeze(session, a, actor=system_actor, now=now)
    return a, b


@pytest.mark.parametrize(
    ("held", "add", "remove"),
    [
        (0, ("B0000002",), ("A0000001",)),
        (1, ("B0000002",), ("A0000001",)),
        (2, (), ("A0000001",)),
        (3, (), ()),
    ],
)
def test_delta_gives_a_device_the_net_changes_after_its_version(
    session, three_changes, held, add, remove
):
    delta = blacklist.delta(session, held)

    assert (delta.from_version, delta.to_version) == (held, 3)
    assert (delta.add, delta.remove) == (add, remove)


def test_delta_limited_to_fewer_versions_stops_at_the_last_one_it_covers(session, three_changes):
    delta = blacklist.delta(session, 0, limit=2)

    assert delta.to_version == 2
    assert (delta.add, delta.remove) == (("A0000001", "B0000002"), ())


def test_snapshot_lists_the_cards_currently_blacklisted(session, three_changes):
    assert blacklist.snapshot(session) == (3, ["B0000002"])
