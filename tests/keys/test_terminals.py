"""Terminal record MAC keys: provisioned wrapped, MACed on the terminal, verified inside."""

from __future__ import annotations

from typing import Any

import pytest

from onecard.keys import algorithms as alg
from onecard.keys.algorithms import Algorithm
from onecard.keys.errors import ApplicationNotOwned, InvalidInput, OperationNotPermitted
from onecard.keys.layout import AppKind, CardApplication, CardLayoutPlan, Grant
from onecard.keys.service import KeyService
from onecard.keys.softhsm import SoftHsm, combine_components
from onecard.keys.terminals import RECORD_MAC_KEY, MacCheck, terminal_factor, terminal_mac

TENANT = 9
APP = "canteen-record"
PLAN = CardLayoutPlan(
    TENANT,
    (
        CardApplication(APP, "canteen", AppKind.CPU_RECORD, Algorithm.SM4, 1, record_id=2),
        CardApplication(
            "purse",
            "card_centre",
            AppKind.CPU_ADF,
            Algorithm.SM4,
            1,
            aid="F04F4E4543415244",
            grants=(Grant("canteen", ("DPK", "DTK")),),
        ),
    ),
)
RECORD = b'{"amount_fen":1200,"seq":1}'


@pytest.fixture
def audit() -> list[tuple[str, int, dict[str, Any]]]:
    return []


@pytest.fixture
def service(hsm: SoftHsm, audit: list[tuple[str, int, dict[str, Any]]]) -> KeyService:
    svc = KeyService(hsm, lambda t: PLAN if t == TENANT else None, lambda *e: audit.append(e))
    for name, exportable in ((RECORD_MAC_KEY, False), ("TK", True)):
        svc.generate_master(module="canteen", tenant_id=TENANT, application=APP,
                            key_name=name, exportable=exportable)  # fmt: skip
    return svc


def provisioned_key(service: KeyService, device_id: str) -> bytes:
    """What the provisioning device gives the terminal: its key, unwrapped with the TK."""
    wrapped = service.card_personalisation(
        module="canteen", tenant_id=TENANT, application=APP, key_names=[RECORD_MAC_KEY],
        key_version=1, factors=[terminal_factor(device_id)],
    )  # fmt: skip
    parts = service.export_components(module="canteen", tenant_id=TENANT, application=APP,
                                      key_name="TK", version=1)  # fmt: skip
    clear = alg.ecb_decrypt(Algorithm.SM4, combine_components(Algorithm.SM4, parts),
                            wrapped.keys[0].ciphertext)  # fmt: skip
    assert alg.kcv(Algorithm.SM4, clear) == wrapped.keys[0].kcv
    return clear


def check(device_id: str, data: bytes, mac: bytes) -> MacCheck:
    return MacCheck((terminal_factor(device_id),), data, mac)


def verify(service: KeyService, *checks: MacCheck, module: str = "canteen") -> list[bool]:
    return service.verify_macs(module=module, tenant_id=TENANT, application=APP,
                               key_name=RECORD_MAC_KEY, key_version=1, checks=checks)  # fmt: skip


def test_a_record_maced_by_the_provisioned_terminal_verifies_inside_the_service(service):
    key = provisioned_key(service, "pos-a")
    mac = terminal_mac(Algorithm.SM4, key, RECORD)

    assert len(mac) == 4
    assert verify(service, check("pos-a", RECORD, mac)) == [True]


def test_an_altered_record_or_another_terminals_key_fails(service):
    mac_a = terminal_mac(Algorithm.SM4, provisioned_key(service, "pos-a"), RECORD)
    mac_b = terminal_mac(Algorithm.SM4, provisioned_key(service, "pos-b"), RECORD)

    assert verify(
        service,
        check("pos-a", RECORD.replace(b"1200", b"1201"), mac_a),
        check("pos-a", RECORD, mac_b),
        check("pos-a", RECORD, mac_a[:3]),
        check("pos-a", RECORD, mac_a),
    ) == [False, False, False, True]


def test_one_audit_event_per_batch_with_counts_and_no_mac(service, audit):
    mac = terminal_mac(Algorithm.SM4, provisioned_key(service, "pos-a"), RECORD)
    audit.clear()

    verify(service, check("pos-a", RECORD, mac), check("pos-a", RECORD, bytes(4)))

    assert [(e[0], e[2]["count"], e[2]["failed"]) for e in audit] == [("keys.macs_verified", 2, 1)]
    assert mac.hex() not in repr(audit).lower()


def test_a_module_that_does_not_own_the_application_is_refused(service, audit):
    with pytest.raises(ApplicationNotOwned):
        verify(service, check("pos-a", RECORD, bytes(4)), module="transit")
    assert audit[-1][0] == "keys.access_denied"


def test_purse_keys_cannot_serve_as_terminal_mac_keys(service):
    service.generate_master(module="card_centre", tenant_id=TENANT, application="purse",
                            key_name="DTK")  # fmt: skip
    with pytest.raises(OperationNotPermitted):
        service.verify_macs(module="canteen", tenant_id=TENANT, application="purse",
                            key_name="DTK", key_version=1,
                            checks=[check("pos-a", RECORD, bytes(4))])  # fmt: skip


def test_terminal_factors_are_eight_bytes_stable_and_distinct():
    assert len(terminal_factor("pos-a")) == 8
    assert terminal_factor("pos-a") == terminal_factor("pos-a")
    assert terminal_factor("pos-a") != terminal_factor("pos-b")
    with pytest.raises(InvalidInput):
        terminal_factor("")
