"""Signed configuration bundles: a device accepts only its own, intact, signed bundle."""

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from onecard.device_agents.protocol.bundles import (
    make_bundle,
    public_key_from_hex,
    public_key_hex,
    verify_bundle,
)
from onecard.device_agents.protocol.codec import decode, encode
from onecard.device_agents.protocol.codes import ErrorReason, ProtocolError
from onecard.device_agents.protocol.topics import Topic

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = public_key_from_hex(public_key_hex(KEY))
BODY = {"mode": "canteen", "offline": {"max_amount": 2000}, "名称": "一食堂"}


def test_a_signed_bundle_verifies_after_the_wire():
    bundle = decode(Topic.CONFIG, encode(make_bundle("pos-1", 3, BODY, KEY)))

    assert verify_bundle(bundle, PUBLIC, device="pos-1") == BODY


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"body": '{"mode":"free"}'}, ErrorReason.BAD_HASH),
        ({"version": 4}, ErrorReason.BAD_SIGNATURE),
        ({"signature": "B" * 86 + "=="}, ErrorReason.BAD_SIGNATURE),
        ({"device": "pos-2"}, ErrorReason.WRONG_DEVICE),
    ],
)
def test_a_tampered_bundle_is_refused(change, reason):
    bundle = make_bundle("pos-1", 3, BODY, KEY).model_copy(update=change)

    with pytest.raises(ProtocolError) as caught:
        verify_bundle(bundle, PUBLIC, device="pos-1")

    assert caught.value.reason is reason


def test_a_bundle_signed_by_another_key_is_refused():
    bundle = make_bundle("pos-1", 3, BODY, Ed25519PrivateKey.generate())

    with pytest.raises(ProtocolError) as caught:
        verify_bundle(bundle, PUBLIC, device="pos-1")

    assert caught.value.reason is ErrorReason.BAD_SIGNATURE


def test_a_signed_body_that_is_not_an_object_is_refused():
    with pytest.raises(ProtocolError) as caught:
        verify_bundle(make_bundle("pos-1", 3, "[1]", KEY), PUBLIC, device="pos-1")

    assert caught.value.reason is ErrorReason.BAD_VALUE
