"""The clearing verifier (epurse.md §12): pure classification rules, then the service with real
cards, a real PSAM and the software HSM: TACs checked in batches by key, ledger postings to the
card float idempotent by record."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import datetime

import pytest

from onecard.device_agents.emulators.cpu_card import CpuCard
from onecard.device_agents.emulators.personalise import CardSpec, personalise
from onecard.device_agents.emulators.psam import Psam, psam_image
from onecard.device_agents.emulators.store import JsonStore
from onecard.device_agents.protocol.clearing import ClearingRecord
from onecard.device_agents.terminal.channel import InProcessChannel
from onecard.device_agents.terminal.psam import PsamSession
from onecard.device_agents.terminal.purchase import purchase
from onecard.keys import algorithms as alg
from onecard.keys.algorithms import Algorithm
from onecard.keys.softhsm import SoftHsm, combine_components
from onecard.platform.actors import Actor
from onecard.platform.cards.clearing import Classification, History, classify, clear_batch
from onecard.platform.cards.keyring import CARD_CENTRE, PURSE, TRANSPORT, Keyring
from onecard.platform.cards.loads import personalisation_package
from onecard.platform.errors import PermissionDenied, ValidationFailed
from onecard.platform.ledger.accounts import balance_of, tenant_account
from onecard.platform.ledger.models import Entry
from onecard.platform.ledger.reconcile import verify

# ---- card-life kit (the personalisation device, the terminal and the PSAM of these tests) ----
KEK = bytes(range(32))
TERMINAL = bytes.fromhex("112233445566")
PIN = bytes.fromhex("123456")
WHEN = datetime(2026, 9, 1, 12, 0, 0)


def ceremony_service(keyring, session, tenant_id, now):
    """A key service for the test's own ceremonies (exporting the transport key, PSAM image)."""
    return keyring.service(session, actor=Actor.system("ceremony"), now=now)


def transport_key(service, tenant_id):
    """The personalisation device's transport key, assembled from exported components."""
    info = service.versions(tenant_id=tenant_id, application=PURSE, key_name=TRANSPORT)[-1]
    parts = service.export_components(module=CARD_CENTRE, tenant_id=tenant_id,
                                      application=PURSE, key_name=TRANSPORT, version=1)  # fmt: skip
    return info.algorithm, combine_components(info.algorithm, parts)


def unwrapper(tk_alg, tk):
    """The unwrap function only a device holding the transport key has."""
    return lambda _name, blob: alg.ecb_decrypt(tk_alg, tk, blob)


def card_from_package(pkg: dict, unwrap) -> CpuCard:
    """An emulated card personalised from a package (JSON form) by the personalisation device."""
    algorithm = Algorithm(pkg["algorithm"])
    spec = CardSpec("campus", algorithm, bytes.fromhex(pkg["asn"]), None, balance=0, pin=PIN,
                    key_index=pkg["key_index"], key_version=pkg["key_version"])  # fmt: skip
    blobs = {k["name"]: bytes.fromhex(k["wrapped"]) for k in pkg["keys"]}
    image = personalise(spec, blobs, unwrap=unwrap)
    for k in pkg["keys"]:  # the device checks every unwrapped key against its KCV
        key = image.keys[k["name"]][pkg["key_index"]].key
        assert alg.kcv(algorithm, key).hex().upper() == k["kcv"]
    ef15 = bytes.fromhex(pkg["ef0015"])  # same layout as the emulator's, validity aside
    assert (image.ef15[:20], image.ef15[28:]) == (ef15[:20], ef15[28:])
    image = replace(image, ef15=ef15, ef16=bytes.fromhex(pkg["ef0016"]))
    return CpuCard(image, store=JsonStore(None))


def psam_for(service, tenant_id, unwrap, *, tts=0x100) -> PsamSession:
    """A PSAM loaded from the key service's wrapped PSAM image (purchase and TAC masters)."""
    wrapped = service.psam_image(module=CARD_CENTRE, tenant_id=tenant_id, application=PURSE,
                                 key_names=["DPK", "DTK"], key_version=1)  # fmt: skip
    algorithm = wrapped.keys[0].algorithm
    masters = {k.name: unwrap(k.name, k.ciphertext) for k in wrapped.keys}
    return PsamSession(InProcessChannel(Psam(psam_image({algorithm: masters}, terminal=TERMINAL,
                                                        tts=tts))))  # fmt: skip


def buy(card: CpuCard, psam: PsamSession, amount: int):
    """One offline purchase at the PSAM's terminal; returns the clearing record."""
    return purchase(InProcessChannel(card), psam, amount=amount, now=WHEN).record


def tampered(record):
    """The same record with one TAC bit flipped (checksum recomputed, as a forger would)."""
    return dataclasses.replace(record, tac=bytes([record.tac[0] ^ 1]) + record.tac[1:])


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
