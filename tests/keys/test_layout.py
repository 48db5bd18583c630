"""Card layout plans and key-system profiles."""

from __future__ import annotations

import json

import pytest

from onecard.keys.algorithms import Algorithm
from onecard.keys.errors import InvalidInput, LayoutError
from onecard.keys.layout import AppKind, CardApplication, CardLayoutPlan, Grant
from onecard.keys.profiles import PROFILES, Profile, card_factors, mohurd_city_factor


def _m1(app_id: str, owner: str, sectors: tuple[int, ...], code: int = 1) -> CardApplication:
    return CardApplication(
        app_id, owner, AppKind.M1, Algorithm.SM4, 0, m1_app_code=code, sectors=sectors
    )


def test_two_applications_cannot_claim_one_sector() -> None:
    with pytest.raises(LayoutError, match="claimed by both"):
        CardLayoutPlan(1, (_m1("a", "canteen", (1, 2)), _m1("b", "access", (2, 3), code=2)))


def test_two_applications_cannot_share_an_aid() -> None:
    apps = tuple(
        CardApplication(n, n, AppKind.CPU_ADF, Algorithm.TDES, 1, aid="a0000000038698070" + "1")
        for n in ("x", "y")
    )
    with pytest.raises(LayoutError):
        CardLayoutPlan(1, apps)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": AppKind.CPU_ADF},
        {"kind": AppKind.CPU_RECORD},
        {"kind": AppKind.M1, "m1_app_code": 1, "sectors": (0,)},
        {"kind": AppKind.CPU_ADF, "aid": "A0", "sectors": (1,)},
        {"kind": AppKind.CPU_ADF, "aid": "A0", "levels": 4},
    ],
)
def test_inconsistent_applications_are_refused(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {
        "app_id": "x",
        "owner": "m",
        "algorithm": Algorithm.TDES,
        "levels": 1,
    }
    with pytest.raises(LayoutError):
        CardApplication(**(base | kwargs))  # type: ignore[arg-type]


def test_plan_round_trips_through_plain_json() -> None:
    plan = CardLayoutPlan(
        3,
        (
            CardApplication(
                "purse",
                "transit",
                AppKind.CPU_ADF,
                Algorithm.SM4,
                2,
                Profile.MOT,
                aid="A000000632010105",
                grants=(Grant("canteen", ("DPK",)),),
            ),
            _m1("door", "access", (4, 5)),
        ),
    )
    again = CardLayoutPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    assert again.application_for_sector(5) == plan.applications[1]
    assert again.application_for_aid("a000000632010105") == plan.applications[0]
    assert again.owned_by("access") == (plan.applications[1],)


def test_grants_are_per_key_name() -> None:
    app = CardApplication(
        "purse",
        "transit",
        AppKind.CPU_ADF,
        Algorithm.TDES,
        1,
        aid="A0",
        grants=(Grant("canteen", ("DPK",)),),
    )
    assert app.allows("transit", "DLK")
    assert app.allows("canteen", "DPK")
    assert not app.allows("canteen", "DLK")
    assert not app.allows("access", "DPK")


def _ef0015(city: bytes, asn: bytes, issuer: bytes = bytes(8)) -> bytes:
    image = bytearray(30)
    image[0:8] = issuer
    if city:
        image[2:4] = city
    image[12:20] = asn
    return bytes(image)


def test_mohurd_factors_are_city_then_asn() -> None:
    asn = bytes.fromhex("1000000012345678")
    image = _ef0015(bytes.fromhex("2000"), asn)
    assert card_factors(Profile.MOHURD, image, 2) == (bytes.fromhex("2000FF0000000000"), asn)
    assert card_factors(Profile.MOHURD, image, 1) == (asn,)
    assert mohurd_city_factor(bytes.fromhex("2000")).hex().upper() == "2000FF0000000000"


def test_mot_factors_are_issuer_id_then_right_eight_asn_bytes() -> None:
    issuer = bytes.fromhex("01011000FFFFFFFF")
    image = bytearray(_ef0015(b"", bytes(8), issuer))
    image[10:20] = bytes.fromhex("03101000000012345678")
    assert card_factors(Profile.MOT, bytes(image), 2) == (issuer, bytes.fromhex("1000000012345678"))


def test_campus_is_one_level() -> None:
    assert PROFILES[Profile.CAMPUS].levels == 1
    with pytest.raises(InvalidInput):
        card_factors(Profile.CAMPUS, bytes(30), 2)
