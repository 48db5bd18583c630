"""Issuing CPU cards and loading them online at the card centre: the personalisation package
(keys only wrapped under the transport key), the default card layout plan, and load
authorisation through the HSM with idempotent postings to the card float."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from onecard.config import ConfigError, KeysSettings
from onecard.device_agents.terminal.channel import InProcessChannel
from onecard.device_agents.terminal.load import LoadAuthorisation, load
from onecard.keys.algorithms import Algorithm
from onecard.keys.errors import ApplicationNotOwned
from onecard.keys.softhsm import SoftHsm
from onecard.platform.actors import Actor
from onecard.platform.audit.models import AuditEvent
from onecard.platform.cards.keyring import (
    CARD_CENTRE,
    PURSE,
    Keyring,
    kek_from_settings,
    load_plan,
)
from onecard.platform.cards.loads import (
    LoadInput,
    authorise_load,
    card_asn,
    personalisation_package,
)
from onecard.platform.errors import DuplicateRequest, ValidationFailed
from onecard.platform.ledger.accounts import balance_of, tenant_account
from onecard.platform.ledger.models import Entry
from onecard.testing.cardkit import (
    KEK,
    PIN,
    TERMINAL,
    card_from_package,
    transport_key,
    unwrapper,
)


@pytest.fixture
def keyring(tmp_path) -> Keyring:
    return Keyring(SoftHsm(tmp_path / "keys.store", KEK, create=True))


@pytest.fixture
def service(keyring, session, system_actor, now):
    return keyring.service(session, actor=system_actor, now=now)


@pytest.fixture
def cpu_card(make_person, make_card):
    return make_card(make_person(name="王五"), kind="cpu")


class ServiceLoadHsm:
    """The terminal's host link, calling the load service directly."""

    def __init__(self, session, service, card, actor, now):
        self.args = (session, service, card)
        self.actor, self.now, self.approvals = actor, now, []

    def verify_load_mac1_and_make_mac2(self, request):
        load_input = LoadInput(
            amount_fen=request.amount, online_counter=request.counter,
            balance_fen=request.balance, rnd=request.rnd, mac1=request.mac1,
            terminal=request.terminal, key_version=request.key_version, asn=request.card.asn,
        )  # fmt: skip
        approval = authorise_load(*self.args, load_input, actor=self.actor, now=self.now)
        self.approvals.append((load_input, approval))
        return LoadAuthorisation(approval.mac2, approval.date, approval.time, approval.host_serial)


def _personalised(session, service, tenant, cpu_card, actor, now):
    pkg = personalisation_package(session, service, cpu_card, actor=actor, now=now)
    unwrap = unwrapper(*transport_key(service, tenant.id))
    return pkg, card_from_package(pkg.to_json(), unwrap)


def test_package_carries_the_card_files_and_only_wrapped_keys(
    session, service, tenant, cpu_card, system_actor, now
):
    pkg, card = _personalised(session, service, tenant, cpu_card, system_actor, now)

    assert pkg.asn == card_asn(tenant.id, cpu_card.id)
    assert pkg.ef0015[12:20] == pkg.asn
    assert pkg.ef0016[2:6] == "王五".encode("gbk")
    assert [k.name for k in pkg.keys.keys] == ["DLK", "DPK", "DTK", "DAMK"]
    for wrapped in pkg.keys.keys:  # what travels is not the key the card ends up holding
        assert wrapped.ciphertext != card.image.keys[wrapped.name][1].key
    assert "keys.card_keys_wrapped" in audit_types(session)


def test_a_tenant_starts_with_the_default_plan_stored(session, service, tenant, cpu_card, now):
    personalisation_package(session, service, cpu_card, actor=Actor.system("t"), now=now)
    plan = load_plan(session, now=now)
    purse = plan.application(PURSE)
    assert (purse.owner, purse.levels, purse.algorithm) == (CARD_CENTRE, 1, Algorithm.SM4)
    assert purse.allows("canteen", "DPK")
    assert not purse.allows("canteen", "DLK")


def test_a_module_cannot_obtain_a_personalisation_package(
    service, session, tenant, cpu_card, system_actor, now
):
    personalisation_package(session, service, cpu_card, actor=system_actor, now=now)
    with pytest.raises(ApplicationNotOwned):
        service.card_personalisation(
            module="canteen",
            tenant_id=tenant.id,
            application=PURSE,
            key_names=["DPK"],
            key_version=1,
            factors=(bytes(8),),
        )


def test_only_active_cpu_cards_are_personalised(session, service, make_person, make_card, now):
    id_card = make_card(make_person(), kind="id", uid="A1B2C3D4")
    with pytest.raises(ValidationFailed):
        personalisation_package(session, service, id_card, actor=Actor.system("t"), now=now)


def test_online_load_posts_cash_desk_to_card_float_and_the_card_accepts_mac2(
    session, service, tenant, cpu_card, system_actor, now, journal
):
    _pkg, card = _personalised(session, service, tenant, cpu_card, system_actor, now)
    host = ServiceLoadHsm(session, service, cpu_card, system_actor, now)

    result = load(InProcessChannel(card), host, amount=2_000, terminal=TERMINAL, pin=PIN)

    assert result.balance_after == 2_000 == card.image.purse.balance
    entry = session.get(Entry, host.approvals[0][1].entry_id)
    assert journal(entry) == [("Dr", "cash_desk", 2_000), ("Cr", "card_float", 2_000)]
    assert balance_of(session, tenant_account(session, "card_float")) == 2_000


def test_a_retried_load_gets_the_same_mac2_and_posts_once(
    session, service, tenant, cpu_card, system_actor, now
):
    _pkg, card = _personalised(session, service, tenant, cpu_card, system_actor, now)
    host = ServiceLoadHsm(session, service, cpu_card, system_actor, now)
    load(InProcessChannel(card), host, amount=500, terminal=TERMINAL, pin=PIN)
    first_input, first = host.approvals[0]

    later = now + timedelta(minutes=5)
    again = authorise_load(session, service, cpu_card, first_input, actor=system_actor, now=later)

    assert (again.mac2, again.date, again.time, again.entry_id) == (
        first.mac2, first.date, first.time, first.entry_id,
    )  # fmt: skip
    assert again.replayed
    assert balance_of(session, tenant_account(session, "card_float")) == 500
    other = replace(first_input, amount_fen=600)
    with pytest.raises(DuplicateRequest):
        authorise_load(session, service, cpu_card, other, actor=system_actor, now=later)


def test_a_load_with_a_wrong_mac1_is_refused(session, service, tenant, cpu_card, system_actor, now):
    personalisation_package(session, service, cpu_card, actor=system_actor, now=now)
    forged = LoadInput(amount_fen=100, online_counter=0, balance_fen=0, rnd=bytes(4),
                       mac1=bytes(4), terminal=TERMINAL, key_version=1)  # fmt: skip
    with pytest.raises(ValidationFailed, match="MAC1"):
        authorise_load(session, service, cpu_card, forged, actor=system_actor, now=now)


def test_a_load_for_another_cards_asn_is_refused(
    session, service, tenant, cpu_card, system_actor, now
):
    personalisation_package(session, service, cpu_card, actor=system_actor, now=now)
    wrong = LoadInput(amount_fen=100, online_counter=0, balance_fen=0, rnd=bytes(4),
                      mac1=bytes(4), terminal=TERMINAL, key_version=1, asn=bytes(8))  # fmt: skip
    with pytest.raises(ValidationFailed, match="ASN"):
        authorise_load(session, service, cpu_card, wrong, actor=system_actor, now=now)


def test_development_mode_creates_a_private_kek_once(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("ONECARD_KEK_TEST_UNSET", raising=False)
    settings = KeysSettings(store=str(tmp_path / "var" / "keys.store"),
                            kek_env="ONECARD_KEK_TEST_UNSET", development=True)  # fmt: skip
    first = kek_from_settings(settings)
    assert kek_from_settings(settings) == first
    kek_file = tmp_path / "var" / "kek.key"
    assert kek_file.stat().st_mode & 0o777 == 0o600
    assert "development key-encryption key" in caplog.text


def test_production_mode_refuses_to_invent_a_kek(tmp_path):
    settings = KeysSettings(store=str(tmp_path / "keys.store"), kek_env="ONECARD_KEK_TEST_UNSET")
    with pytest.raises(ConfigError):
        kek_from_settings(settings)


def audit_types(session) -> set[str]:
    return set(session.scalars(select(AuditEvent.type)))
