"""The clearing verifier (epurse.md §12): pure classification rules, then the service with real
cards, a real PSAM and the software HSM: TACs checked in batches by key, ledger postings to the
card float idempotent by record."""

from __future__ import annotations

from dataclasses import replace

import pytest

from onecard.device_agents.protocol.clearing import ClearingRecord
from onecard.keys.softhsm import SoftHsm
from onecard.platform.actors import Actor
from onecard.platform.cards.clearing import Classification, History, classify, clear_batch
from onecard.platform.cards.keyring import Keyring
from onecard.platform.cards.loads import personalisation_package
from onecard.platform.errors import PermissionDenied, ValidationFailed
from onecard.platform.ledger.accounts import balance_of, tenant_account
from onecard.platform.ledger.models import Entry
from onecard.platform.ledger.reconcile import verify
from onecard.testing.cardkit import (
    KEK,
    TERMINAL,
    buy,
    card_from_package,
    psam_for,
    tampered,
    transport_key,
    unwrapper,
)

OK, BAD, DUP, GAP = (Classification.OK, Classification.BAD_TAC, Classification.DUPLICATE,
                     Classification.GAP)  # fmt: skip


def rec(counter: int, serial: int, *, asn: int = 1, kind_type: int = 0x06) -> ClearingRecord:
    """A record with only the fields the continuity rules read."""
    return ClearingRecord(
        scheme=3, alg_id=4, key_version=1, key_index=1, issuer_factor=None,
        asn=asn.to_bytes(10, "big"), card_type=1, ttype=kind_type, amount=1, balance_before=9,
        counter=counter, terminal=TERMINAL, serial=serial, date=bytes(4), time=bytes(3),
        tac=bytes(4), mac2_status=0,
    )  # fmt: skip


def test_consecutive_counters_and_serials_are_ok():
    records = [rec(0, 10), rec(1, 11), rec(2, 12)]
    assert classify(records, [True] * 3, History()) == [OK, OK, OK]


def test_a_missing_counter_marks_the_next_record_as_gap():
    assert classify([rec(0, 10), rec(2, 11)], [True, True], History()) == [OK, GAP]


def test_a_missing_terminal_serial_marks_the_next_record_as_gap():
    records = [rec(0, 10, asn=1), rec(0, 12, asn=2)]
    assert classify(records, [True, True], History()) == [OK, GAP]


def test_a_repeated_record_is_a_duplicate_even_inside_one_batch():
    assert classify([rec(0, 10), rec(0, 10)], [True, True], History()) == [OK, DUP]


def test_a_bad_tac_is_not_accepted_so_the_record_after_it_is_a_gap():
    assert classify([rec(0, 10), rec(1, 11), rec(2, 12)], [True, False, True], History()) == [
        OK, BAD, GAP,
    ]  # fmt: skip


def test_history_from_earlier_batches_counts():
    history = History()
    classify([rec(0, 10), rec(1, 11)], [True, True], history)
    assert classify([rec(1, 11), rec(2, 12)], [True, True], history) == [DUP, OK]


def test_loads_and_purchases_count_separately():
    records = [rec(0, 5, kind_type=0x02), rec(0, 10), rec(1, 6, kind_type=0x02)]
    assert classify(records, [True] * 3, History()) == [OK, OK, OK]


# ------------------------------------------------------------------------- the service
@pytest.fixture
def keyring(tmp_path) -> Keyring:
    return Keyring(SoftHsm(tmp_path / "keys.store", KEK, create=True))


@pytest.fixture
def service(keyring, session, system_actor, now):
    return keyring.service(session, actor=system_actor, now=now)


@pytest.fixture
def life(session, service, tenant, make_person, make_card, system_actor, now):
    """A personalised emulated card with 1000 fen on it (put there outside clearing) and a PSAM."""
    card_row = make_card(make_person(), kind="cpu")
    pkg = personalisation_package(session, service, card_row, actor=system_actor, now=now)
    unwrap = unwrapper(*transport_key(service, tenant.id))
    card = card_from_package(pkg.to_json(), unwrap)
    card._image = replace(card.image, purse=replace(card.image.purse, balance=1_000))
    return card, psam_for(service, tenant.id, unwrap)


def _clear(session, service, records, merchant, actor, now):
    raw = [r.to_bytes() for r in records]
    return clear_batch(session, service, raw, merchant_account_id=merchant.id, actor=actor,
                       now=now)  # fmt: skip


def test_verified_purchases_move_value_from_the_card_float_to_the_merchant(
    session, service, life, merchant, system_actor, now, journal
):
    card, psam = life
    records = [buy(card, psam, amount) for amount in (120, 80)]

    report = _clear(session, service, records, merchant, system_actor, now)

    assert report.counts["ok"] == 2
    assert report.posted_fen == 200
    entry = session.get(Entry, report.verdicts[0].entry_id)
    assert journal(entry) == [("Dr", "card_float", 120), ("Cr", "merchant", 120)]
    assert entry.idempotency_key == f"clearing:{records[0].asn.hex().upper()}:0"
    assert balance_of(session, merchant) == 200
    assert verify(session).ok


def test_replaying_a_batch_reports_duplicates_and_posts_nothing(
    session, service, life, merchant, system_actor, now
):
    card, psam = life
    records = [buy(card, psam, 50) for _ in range(3)]
    _clear(session, service, records, merchant, system_actor, now)
    entries = session.query(Entry).count()

    again = _clear(session, service, records, merchant, system_actor, now)

    assert again.counts == {"ok": 0, "bad_tac": 0, "duplicate": 3, "gap": 0}
    assert session.query(Entry).count() == entries
    assert balance_of(session, merchant) == 150


def test_a_tampered_tac_is_reported_and_not_posted_and_the_genuine_record_still_clears(
    session, service, life, merchant, system_actor, now
):
    card, psam = life
    genuine = buy(card, psam, 70)

    forged = _clear(session, service, [tampered(genuine)], merchant, system_actor, now)
    assert [v.classification for v in forged.verdicts] == [BAD]
    assert balance_of(session, merchant) == 0

    later = _clear(session, service, [genuine], merchant, system_actor, now)
    assert [v.classification for v in later.verdicts] == [OK]
    assert balance_of(session, merchant) == 70


def test_a_lost_record_shows_as_a_gap_but_the_later_purchase_is_still_posted(
    session, service, life, merchant, system_actor, now
):
    card, psam = life
    first, _lost, third = (buy(card, psam, 10) for _ in range(3))

    report = _clear(session, service, [first, third], merchant, system_actor, now)

    assert [v.classification for v in report.verdicts] == [OK, GAP]
    assert len(report.problems) == 1
    assert balance_of(session, merchant) == 20


def test_a_record_with_a_broken_checksum_is_refused_with_its_index(
    session, service, life, merchant, system_actor, now
):
    card, psam = life
    raw = buy(card, psam, 10).to_bytes()
    with pytest.raises(ValidationFailed, match="record 1"):
        clear_batch(session, service, [raw, raw[:-1] + b"\x00"], merchant_account_id=merchant.id,
                    actor=system_actor, now=now)  # fmt: skip


def test_clearing_needs_the_permission(session, service, merchant, now):
    clerk = Actor(type="operator", id="clerk", permissions=frozenset({"cards.view"}))
    with pytest.raises(PermissionDenied, match=r"clearing\.submit"):
        clear_batch(session, service, [bytes(80)], merchant_account_id=merchant.id, actor=clerk,
                    now=now)  # fmt: skip


def test_the_float_account_cannot_be_the_merchant(session, service, life, system_actor, now):
    card, psam = life
    float_ = tenant_account(session, "card_float")
    with pytest.raises(ValidationFailed):
        clear_batch(session, service, [buy(card, psam, 5).to_bytes()],
                    merchant_account_id=float_.id, actor=system_actor, now=now)  # fmt: skip
