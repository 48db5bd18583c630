"""KeyService: application/sector isolation, audit, ceremonies and rotation."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from onecard.keys import macdata as md
from onecard.keys.algorithms import M1_KEY_A, Algorithm, diversify_path, m1_sector_key, mac, tac_key
from onecard.keys.errors import ApplicationNotOwned, KeyNotFound, MacInvalid, OperationNotPermitted
from onecard.keys.hsm import KeyRef, LoadRequest, TacCheck
from onecard.keys.layout import AppKind, CardApplication, CardLayoutPlan, Grant
from onecard.keys.profiles import Profile
from onecard.keys.service import KeyService
from onecard.keys.softhsm import SoftHsm, split_key

TENANT = 7
ASN = bytes.fromhex("1000000012345678")
UID = bytes.fromhex("A1B2C3D4")

PLAN = CardLayoutPlan(
    TENANT,
    (
        CardApplication(
            "purse",
            "transit",
            AppKind.CPU_ADF,
            Algorithm.TDES,
            1,
            Profile.CAMPUS,
            aid="F00000000001",
            grants=(Grant("canteen", ("DPK", "DTK")),),
        ),
        CardApplication(
            "canteen-record", "canteen", AppKind.CPU_RECORD, Algorithm.SM4, 1, record_id=3
        ),
        CardApplication(
            "access-m1", "access", AppKind.M1, Algorithm.SM4, 0, m1_app_code=2, sectors=(4, 5)
        ),
        CardApplication(
            "canteen-m1", "canteen", AppKind.M1, Algorithm.TDES, 0, m1_app_code=1, sectors=(1, 2)
        ),
    ),
)


class Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, int, dict[str, Any]]] = []

    def __call__(self, event_type: str, tenant_id: int, data: dict[str, Any]) -> None:
        json.dumps(data)  # audit data must be plain JSON
        self.events.append((event_type, tenant_id, data))

    def types(self) -> list[str]:
        return [e[0] for e in self.events]


@pytest.fixture
def audit() -> Audit:
    return Audit()


@pytest.fixture
def service(hsm: SoftHsm, audit: Audit) -> KeyService:
    return KeyService(hsm, lambda t: PLAN if t == TENANT else None, audit)


@pytest.fixture
def masters(service: KeyService) -> dict[str, bytes]:
    """Known masters imported through the service's ceremony (two components each)."""
    keys = {name: os.urandom(16) for name in ("DLK", "DPK", "DTK", "M1-access", "M1-canteen")}
    for name in ("DLK", "DPK", "DTK"):
        comps = split_key(Algorithm.TDES, keys[name], 2)
        service.import_master(
            module="transit",
            tenant_id=TENANT,
            application="purse",
            key_name=name,
            version=1,
            components=comps,
        )
    for app, owner, alg, name in (
        ("access-m1", "access", Algorithm.SM4, "M1-access"),
        ("canteen-m1", "canteen", Algorithm.TDES, "M1-canteen"),
    ):
        service.import_master(
            module=owner,
            tenant_id=TENANT,
            application=app,
            key_name="M1",
            version=1,
            components=split_key(alg, keys[name], 2),
        )
    return keys


def _tac_check(dtk_master: bytes, amount: int = 100) -> TacCheck:
    data = md.purchase_tac_data(amount, bytes(6), 1, bytes.fromhex("20240301"), bytes(3))
    card = diversify_path(Algorithm.TDES, dtk_master, [ASN])
    return TacCheck((ASN,), data, mac(Algorithm.TDES, tac_key(Algorithm.TDES, card), data))


def test_canteen_cannot_obtain_access_sector_keys(
    service: KeyService, masters: Any, audit: Audit
) -> None:
    with pytest.raises(ApplicationNotOwned):
        service.m1_sector_key(
            module="canteen", tenant_id=TENANT, sector=4, uid=UID, key_type=M1_KEY_A, key_version=1
        )
    event, tenant, data = audit.events[-1]
    assert (event, tenant, data["module"], data["sector"]) == (
        "keys.access_denied",
        TENANT,
        "canteen",
        4,
    )


def test_canteen_cannot_use_the_purse_load_key(
    service: KeyService, masters: Any, audit: Audit
) -> None:
    request = LoadRequest((ASN,), bytes(4), 0, 0, 100, bytes(6), bytes(4), bytes(4), bytes(3))
    with pytest.raises(ApplicationNotOwned):
        service.load_mac2(
            module="canteen", tenant_id=TENANT, application="purse", key_version=1, request=request
        )
    assert audit.events[-1][0] == "keys.access_denied"
    assert audit.events[-1][2]["key"] == "DLK"


@pytest.mark.parametrize(
    ("application", "key_name"), [("purse", "DAMK"), ("access-m1", "M1"), ("nonexistent", "DPK")]
)
def test_canteen_cannot_run_ceremonies_on_applications_it_does_not_own(
    service: KeyService, audit: Audit, application: str, key_name: str
) -> None:
    with pytest.raises(ApplicationNotOwned):
        service.export_components(
            module="canteen",
            tenant_id=TENANT,
            application=application,
            key_name=key_name,
            version=1,
        )
    assert audit.types() == ["keys.access_denied"]


def test_unknown_tenant_has_no_applications(service: KeyService, audit: Audit) -> None:
    with pytest.raises(ApplicationNotOwned):
        service.verify_tac(
            module="transit",
            tenant_id=99,
            application="purse",
            key_version=1,
            check=_tac_check(bytes(16)),
        )
    assert audit.events[-1][:2] == ("keys.access_denied", 99)


def test_granted_module_verifies_purse_tacs(
    service: KeyService, masters: Any, audit: Audit
) -> None:
    good, bad = _tac_check(masters["DTK"]), _tac_check(masters["DTK"])
    bad = TacCheck(bad.factors, bad.data, bytes(4))
    got = service.verify_tacs(
        module="canteen", tenant_id=TENANT, application="purse", key_version=1, checks=[good, bad]
    )
    assert got == [True, False]
    event, _, data = audit.events[-1]
    assert (event, data["count"], data["failed"], data["module"]) == (
        "keys.tacs_verified",
        2,
        1,
        "canteen",
    )


def test_owner_gets_its_own_m1_sector_key(service: KeyService, masters: Any, audit: Audit) -> None:
    got = service.m1_sector_key(
        module="canteen", tenant_id=TENANT, sector=2, uid=UID, key_type=M1_KEY_A, key_version=1
    )
    assert got == m1_sector_key(Algorithm.TDES, masters["M1-canteen"], UID, 1, 2, M1_KEY_A)
    assert audit.events[-1][0] == "keys.m1_sector_key"


def test_bad_load_mac1_is_audited_and_refused(
    service: KeyService, masters: Any, audit: Audit
) -> None:
    request = LoadRequest((ASN,), bytes(4), 0, 0, 100, bytes(6), bytes(4), bytes(4), bytes(3))
    with pytest.raises(MacInvalid):
        service.load_mac2(
            module="transit", tenant_id=TENANT, application="purse", key_version=1, request=request
        )
    assert audit.events[-1][2]["outcome"] == "mac1_invalid"


def test_audit_data_never_contains_key_bytes(
    service: KeyService, masters: dict[str, bytes], audit: Audit
) -> None:
    service.export_components(
        module="transit", tenant_id=TENANT, application="purse", key_name="DPK", version=1
    )
    service.rotate(module="transit", tenant_id=TENANT, application="purse", key_name="DPK")
    service.verify_tac(
        module="transit",
        tenant_id=TENANT,
        application="purse",
        key_version=1,
        check=_tac_check(masters["DTK"]),
    )
    text = json.dumps([e[2] for e in audit.events]).lower()
    for key in masters.values():
        assert key.hex() not in text
        assert key[:4].hex() not in text


def test_rotation_adds_a_version_and_old_cards_keep_working(
    service: KeyService, masters: dict[str, bytes], audit: Audit
) -> None:
    info = service.rotate(module="transit", tenant_id=TENANT, application="purse", key_name="DTK")
    assert info.ref == KeyRef(TENANT, "purse", "DTK", 2)
    assert info.algorithm is Algorithm.TDES
    assert info.levels == 1
    assert service.current_version(tenant_id=TENANT, application="purse", key_name="DTK") == 2
    old_card = _tac_check(masters["DTK"])
    args = {"module": "transit", "tenant_id": TENANT, "application": "purse", "check": old_card}
    assert service.verify_tac(key_version=1, **args)
    assert not service.verify_tac(key_version=2, **args)
    assert "keys.rotated" in audit.types()


def test_retired_version_stops_working(service: KeyService, masters: dict[str, bytes]) -> None:
    service.rotate(module="transit", tenant_id=TENANT, application="purse", key_name="DTK")
    service.retire(
        module="transit", tenant_id=TENANT, application="purse", key_name="DTK", version=1
    )
    assert service.current_version(tenant_id=TENANT, application="purse", key_name="DTK") == 2
    with pytest.raises(OperationNotPermitted):
        service.verify_tac(
            module="transit",
            tenant_id=TENANT,
            application="purse",
            key_version=1,
            check=_tac_check(masters["DTK"]),
        )


def test_ceremony_moves_a_master_between_hsms_by_components(
    service: KeyService, tmp_path: Path, audit: Audit
) -> None:
    made = service.generate_master(
        module="transit", tenant_id=TENANT, application="purse", key_name="DPK"
    )
    comps = service.export_components(
        module="transit", tenant_id=TENANT, application="purse", key_name="DPK", version=1, count=3
    )
    backup = KeyService(
        SoftHsm(tmp_path / "backup", os.urandom(32), create=True), lambda t: PLAN, audit
    )
    copy = backup.import_master(
        module="transit",
        tenant_id=TENANT,
        application="purse",
        key_name="DPK",
        version=1,
        components=comps,
        expected_kcv=made.kcv,
    )
    assert copy.kcv == made.kcv
    assert {"keys.generated", "keys.components_exported", "keys.imported"} <= set(audit.types())


def test_current_version_of_a_missing_key_is_an_error(service: KeyService) -> None:
    with pytest.raises(KeyNotFound):
        service.current_version(tenant_id=TENANT, application="purse", key_name="DLK")


def test_personalisation_keys_come_wrapped_for_the_owner(
    service: KeyService, masters: dict[str, bytes]
) -> None:
    service.generate_master(module="transit", tenant_id=TENANT, application="purse", key_name="TK")
    wrapped = service.card_personalisation(
        module="transit",
        tenant_id=TENANT,
        application="purse",
        key_names=["DLK", "DPK", "DTK"],
        key_version=1,
        factors=[ASN],
    )
    assert [w.name for w in wrapped.keys] == ["DLK", "DPK", "DTK"]
    for w in wrapped.keys:
        assert diversify_path(Algorithm.TDES, masters[w.name], [ASN]) not in w.ciphertext
    with pytest.raises(ApplicationNotOwned):
        service.psam_image(
            module="canteen",
            tenant_id=TENANT,
            application="purse",
            key_names=["DPK"],
            key_version=1,
        )
