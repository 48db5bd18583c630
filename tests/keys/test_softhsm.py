"""Software HSM: store at rest, tamper refusal, ceremonies and card operations vs the spec."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from onecard.keys.algorithms import Algorithm, diversify_path, ecb_decrypt, kcv, retail_mac
from onecard.keys.errors import (
    InvalidInput,
    KcvMismatch,
    KeyExists,
    KeyNotFound,
    KeyStoreError,
    KeyStoreTampered,
    MacInvalid,
    OperationNotPermitted,
)
from onecard.keys.hsm import (
    Hsm,
    KeyComponent,
    KeyRef,
    LoadRequest,
    PurchaseRequest,
    TacCheck,
)
from onecard.keys.keystore import load_kek
from onecard.keys.softhsm import SoftHsm, split_key

H = bytes.fromhex
ImportKey = Callable[[KeyRef, Algorithm, int, bytes], Any]  # the conftest fixture's type
ALGS = [Algorithm.TDES, Algorithm.SM4]


def ref(name: str, version: int = 1, app: str = "purse") -> KeyRef:
    return KeyRef(7, app, name, version)


def test_soft_hsm_satisfies_the_hsm_protocol(hsm: SoftHsm) -> None:
    assert isinstance(hsm, Hsm)


def test_generated_key_survives_reopening_with_the_same_kek(
    hsm: SoftHsm, store_path: Path, kek: bytes
) -> None:
    info = hsm.generate_key(ref("DPK"), Algorithm.SM4, 2)
    again = SoftHsm(store_path, kek)
    assert again.key_info(ref("DPK")) == info
    assert len(info.kcv) == 3


def test_store_with_a_flipped_byte_refuses_to_open(
    hsm: SoftHsm, store_path: Path, kek: bytes
) -> None:
    hsm.generate_key(ref("DPK"), Algorithm.TDES, 1)
    original = store_path.read_bytes()
    for pos in (0, 9, 25, len(original) // 2, len(original) - 1):
        tampered = bytearray(original)
        tampered[pos] ^= 0x01
        store_path.write_bytes(bytes(tampered))
        with pytest.raises(KeyStoreTampered):
            SoftHsm(store_path, kek)


def test_store_refuses_a_wrong_kek(hsm: SoftHsm, store_path: Path) -> None:
    hsm.generate_key(ref("DPK"), Algorithm.TDES, 1)
    with pytest.raises(KeyStoreTampered):
        SoftHsm(store_path, bytes(32))


def test_truncated_store_refuses_to_open(store_path: Path, kek: bytes) -> None:
    store_path.write_bytes(b"OCKSTOR1short")
    with pytest.raises(KeyStoreTampered):
        SoftHsm(store_path, kek)


def test_missing_store_is_an_error_unless_created(tmp_path: Path, kek: bytes) -> None:
    with pytest.raises(KeyStoreError):
        SoftHsm(tmp_path / "absent", kek)


def test_store_file_holds_no_key_in_clear(hsm: SoftHsm, store_path: Path) -> None:
    created: list[bytes] = []
    for n, alg in enumerate(ALGS * 3):
        key = os.urandom(16)
        created.append(key)
        hsm.import_components(ref(f"DAMK{n}"), alg, 1, split_key(alg, key, 2))
    blob = store_path.read_bytes()
    for key in created:
        for needle in (key, key[:8], key[8:], key.hex().encode(), key.hex().upper().encode()):
            assert needle not in blob
        assert base64.b64encode(key)[:16] not in blob


def test_writes_leave_no_temporary_files(hsm: SoftHsm, store_path: Path) -> None:
    hsm.generate_key(ref("DPK"), Algorithm.TDES, 1)
    hsm.set_active(ref("DPK"), False)
    assert [p.name for p in store_path.parent.iterdir()] == [store_path.name]
    assert store_path.stat().st_mode & 0o077 == 0


def test_reprs_hide_key_bytes(hsm: SoftHsm) -> None:
    key = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    comps = split_key(Algorithm.TDES, key, 2)
    text = (
        repr(comps) + repr(hsm) + repr(hsm.import_components(ref("DTK"), Algorithm.TDES, 1, comps))
    )
    for comp in comps:
        assert comp.value.hex() not in text.lower()
    assert key.hex() not in text.lower()


def test_components_round_trip_between_two_stores(hsm: SoftHsm, tmp_path: Path) -> None:
    info = hsm.generate_key(ref("DLK"), Algorithm.SM4, 2)
    comps = hsm.export_components(ref("DLK"), 3)
    assert [c.kcv for c in comps] == [kcv(Algorithm.SM4, c.value) for c in comps]
    other = SoftHsm(tmp_path / "other.store", os.urandom(32), create=True)
    copy = other.import_components(ref("DLK"), Algorithm.SM4, 2, comps, expected_kcv=info.kcv)
    assert copy.kcv == info.kcv


def test_component_with_a_wrong_kcv_is_refused(hsm: SoftHsm) -> None:
    a, b = split_key(Algorithm.TDES, os.urandom(16), 2)
    bad = KeyComponent(b.value, bytes(3))
    with pytest.raises(KcvMismatch, match="component 2"):
        hsm.import_components(ref("DPK"), Algorithm.TDES, 1, [a, bad])
    with pytest.raises(KeyNotFound):
        hsm.key_info(ref("DPK"))


def test_assembled_key_must_match_the_expected_kcv(hsm: SoftHsm) -> None:
    comps = split_key(Algorithm.TDES, os.urandom(16), 2)
    with pytest.raises(KcvMismatch):
        hsm.import_components(ref("DPK"), Algorithm.TDES, 1, comps, expected_kcv=b"\0\0\0")


def test_non_exportable_key_refuses_component_export(hsm: SoftHsm) -> None:
    hsm.generate_key(ref("DTK"), Algorithm.TDES, 1, exportable=False)
    with pytest.raises(OperationNotPermitted):
        hsm.export_components(ref("DTK"), 2)


def test_a_key_is_never_overwritten(hsm: SoftHsm) -> None:
    hsm.generate_key(ref("DPK"), Algorithm.TDES, 1)
    with pytest.raises(KeyExists):
        hsm.generate_key(ref("DPK"), Algorithm.TDES, 1)


def test_retired_key_refuses_operations(hsm: SoftHsm) -> None:
    hsm.generate_key(ref("DAMK"), Algorithm.TDES, 0)
    hsm.set_active(ref("DAMK"), False)
    with pytest.raises(OperationNotPermitted):
        hsm.derive_and_mac(ref("DAMK"), [], b"x")


def test_load_keys_are_no_mac_oracle(hsm: SoftHsm) -> None:
    hsm.generate_key(ref("DLK"), Algorithm.TDES, 1)
    with pytest.raises(OperationNotPermitted):
        hsm.derive_and_mac(ref("DLK"), [bytes(8)], b"forged MAC2 input")


# ------------------------------------------------------------------ the spec example via HSM
class Spec:
    def __init__(self, vectors: dict[str, Any], alg: Algorithm) -> None:
        self.alg, self.i, self.o = alg, vectors["inputs"], vectors[alg.value]
        m = self.i["master_keys_3des" if alg is Algorithm.TDES else "master_keys_sm4"]
        self.masters = {k[3:]: H(v) for k, v in m.items()}
        self.issuer, self.asn = H(self.i["issuer_factor"]), H(self.i["card_asn"])
        self.terminal = H(self.i["terminal_id"])

    def issuer_key(self, name: str) -> bytes:
        return H(self.o["diversification"][name]["issuer_level(issuer_factor)"])


@pytest.fixture(params=[(a, lv) for a in ALGS for lv in (1, 2)], ids=lambda p: f"{p[0]}-{p[1]}lvl")
def loaded(request: pytest.FixtureRequest, vectors: dict[str, Any], import_key: ImportKey) -> Any:
    """The spec's masters in the HSM: two levels from the root, or one from the city key."""
    alg, levels = request.param
    spec = Spec(vectors, alg)
    for name in ("DLK", "DPK", "DTK"):
        key = spec.masters[name] if levels == 2 else spec.issuer_key(name)
        import_key(ref(name), alg, levels, key)
    factors = (spec.issuer, spec.asn) if levels == 2 else (spec.asn,)
    return spec, factors


def _load_request(spec: Spec, factors: tuple[bytes, ...], mac1: str) -> LoadRequest:
    ld = spec.i["load"]
    return LoadRequest(
        factors=factors,
        rnd=H(ld["random"]),
        online_counter=ld["online_counter"],
        balance=ld["balance_before"],
        amount=ld["amount"],
        terminal=spec.terminal,
        mac1=H(mac1),
        date=H(ld["date"]),
        time=H(ld["time"]),
    )


def _purchase_request(spec: Spec, factors: tuple[bytes, ...], tx: str) -> PurchaseRequest:
    p = spec.i[tx]
    return PurchaseRequest(
        factors=factors,
        rnd=H(p["random"]),
        offline_counter=p["offline_counter"],
        terminal_serial=p["terminal_serial"],
        amount=p["amount"],
        terminal=spec.terminal,
        date=H(p["date"]),
        time=H(p["time"]),
        ttype=int(p["type"], 16),
    )


def test_load_mac2_matches_spec_vector(hsm: SoftHsm, loaded: Any) -> None:
    spec, factors = loaded
    want = spec.o["load"]
    assert (
        hsm.load_mac2(ref("DLK"), _load_request(spec, factors, want["mac1"])).hex().upper()
        == (want["mac2"])
    )


def test_load_with_a_wrong_mac1_gets_no_mac2(hsm: SoftHsm, loaded: Any) -> None:
    spec, factors = loaded
    with pytest.raises(MacInvalid):
        hsm.load_mac2(ref("DLK"), _load_request(spec, factors, "00000000"))


@pytest.mark.parametrize("tx", ["purchase", "capp_purchase"])
def test_purchase_mac1_and_mac2_match_spec_vectors(hsm: SoftHsm, loaded: Any, tx: str) -> None:
    spec, factors = loaded
    want, request = spec.o[tx], _purchase_request(spec, factors, tx)
    assert hsm.purchase_mac1(ref("DPK"), request).hex().upper() == want["mac1"]
    assert hsm.verify_purchase_mac2(ref("DPK"), request, H(want["mac2"]))
    assert not hsm.verify_purchase_mac2(ref("DPK"), request, H("00000000"))


def test_tacs_of_the_spec_records_verify_and_forgeries_do_not(hsm: SoftHsm, loaded: Any) -> None:
    spec, factors = loaded
    checks = []
    for tx in ("purchase", "capp_purchase"):
        rec = spec.o[tx]
        checks.append(TacCheck(factors, H(rec["tac_input"]), H(rec["tac"])))
    ld = spec.o["load"]
    checks.append(TacCheck(factors, H(ld["tac_input"]), H(ld["tac"])))
    forged = TacCheck(factors, H(ld["tac_input"]), bytes(4))
    other_card = TacCheck((*factors[:-1], bytes(8)), H(ld["tac_input"]), H(ld["tac"]))
    got = hsm.verify_tacs(ref("DTK"), [*checks, forged, other_card])
    assert got == [True, True, True, False, False]


def test_tac_check_with_the_wrong_number_of_factors_is_refused(hsm: SoftHsm, loaded: Any) -> None:
    _, factors = loaded
    with pytest.raises(InvalidInput):
        hsm.verify_tacs(ref("DTK"), [TacCheck((*factors, bytes(8)), b"", bytes(4))])


def test_wrapped_card_keys_unwrap_to_the_spec_card_keys(
    hsm: SoftHsm, loaded: Any, import_key: ImportKey
) -> None:
    spec, factors = loaded
    tk = os.urandom(16)
    import_key(ref("TK"), Algorithm.SM4, 0, tk)
    wrapped = hsm.wrap_card_keys([ref("DLK"), ref("DPK"), ref("DTK")], factors, ref("TK"))
    assert wrapped.transport_kcv == kcv(Algorithm.SM4, tk)
    for w in wrapped.keys:
        clear = ecb_decrypt(Algorithm.SM4, tk, w.ciphertext)
        assert (
            clear.hex().upper() == spec.o["diversification"][w.name]["two_level(issuer,card_asn)"]
        )
        assert w.kcv == kcv(spec.alg, clear)
        assert clear not in w.ciphertext


def test_psam_image_holds_issuer_level_keys_wrapped(
    hsm: SoftHsm, vectors: dict[str, Any], import_key: ImportKey
) -> None:
    spec = Spec(vectors, Algorithm.TDES)
    import_key(ref("DPK"), spec.alg, 2, spec.masters["DPK"])
    tk = os.urandom(16)
    import_key(ref("TK"), Algorithm.TDES, 0, tk)
    image = hsm.wrap_psam_image([ref("DPK")], [spec.issuer], ref("TK"))
    clear = ecb_decrypt(Algorithm.TDES, tk, image.keys[0].ciphertext)
    assert clear == spec.issuer_key("DPK")


def test_psam_image_never_carries_load_keys(hsm: SoftHsm) -> None:
    hsm.generate_key(ref("DLK"), Algorithm.TDES, 1)
    hsm.generate_key(ref("TK"), Algorithm.TDES, 0)
    with pytest.raises(OperationNotPermitted):
        hsm.wrap_psam_image([ref("DLK")], [], ref("TK"))


def test_secure_messaging_mac_uses_the_card_level_key(hsm: SoftHsm, import_key: ImportKey) -> None:
    master, factor = os.urandom(16), os.urandom(8)
    import_key(ref("DAMK"), Algorithm.TDES, 1, master)
    card = diversify_path(Algorithm.TDES, master, [factor])
    data, iv = H("04D69500080102030405060708"), H("1122334400000000")
    assert hsm.derive_and_mac(ref("DAMK"), [factor], data, iv) == retail_mac(card, data, iv)


# ------------------------------------------------------------------ KEK loading
def test_load_kek_reads_bytes_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kek = os.urandom(32)
    assert load_kek(kek) == kek
    for content in (kek, kek.hex().encode() + b"\n", base64.b64encode(kek)):
        f = tmp_path / "kek"
        f.write_bytes(content)
        assert load_kek(path=f) == kek
    monkeypatch.setenv("TEST_KEK", kek.hex())
    assert load_kek(env="TEST_KEK") == kek


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"value": bytes(16)}, {"env": "ONECARD_TEST_UNSET_KEK"}, {"value": bytes(32), "env": "X"}],
)
def test_load_kek_refuses_missing_or_short_keys(kwargs: dict[str, Any]) -> None:
    with pytest.raises(KeyStoreError):
        load_kek(**kwargs)
