"""Offline rules and the text credential parser of wedge readers and scanners."""

import io

import pytest

from onecard.device_agents.drivers.base import parse_credential_text
from onecard.device_agents.drivers.wedge import LineReader
from onecard.device_agents.protocol.codes import CredentialKind, ReasonCode
from onecard.device_agents.runtime.agent import LocalDecision
from onecard.device_agents.runtime.offline import (
    OfflineContext,
    OfflinePolicy,
    default_rule,
)


def ctx(**kw):
    base = {"key": 1, "blacklisted": False, "amount": None, "spent_today": 0, "clock_valid": True}
    return OfflineContext(**{**base, **kw})


def test_offline_a_blacklisted_card_is_denied_as_lost():
    assert default_rule(ctx(blacklisted=True)).reason is ReasonCode.CARD_LOST


def test_offline_a_sale_over_the_per_tap_allowance_is_denied():
    decision = default_rule(ctx(amount=5001))

    assert (decision.allow, decision.reason) == (False, ReasonCode.LIMIT_REACHED)


def test_offline_the_daily_allowance_per_card_counts_earlier_sales():
    assert default_rule(ctx(amount=1000, spent_today=19000)).allow
    assert not default_rule(ctx(amount=1001, spent_today=19000)).allow


def test_offline_with_an_untrusted_clock_a_door_opens_and_the_record_is_flagged():
    decision = default_rule(ctx(clock_valid=False))

    assert decision.allow
    assert "time_untrusted" in decision.flags


def test_policy_can_deny_when_the_clock_is_untrusted():
    policy = OfflinePolicy.from_body({"offline": {"deny_when_clock_invalid": True}})

    assert default_rule(ctx(clock_valid=False, policy=policy)).reason is ReasonCode.CLOCK_INVALID


@pytest.mark.parametrize(
    ("text", "kind", "value", "amount"),
    [
        ("04A1B2C3\n", CredentialKind.UID, "04a1b2c3", None),
        ("04a1b2c3d4e5f6@1200", CredentialKind.UID, "04a1b2c3d4e5f6", 1200),
        ("20240001", CredentialKind.UID, "20240001", None),
        ("card:20240001", CredentialKind.CARD_NO, "20240001", None),
        ("123456789", CredentialKind.CARD_NO, "123456789", None),
        ("https://v.example/p/abc", CredentialKind.QR, "https://v.example/p/abc", None),
    ],
)
def test_wedge_lines_become_credentials(text, kind, value, amount):
    presented = parse_credential_text(text)

    assert presented is not None
    assert (presented.credential.kind, presented.credential.value) == (kind, value)
    assert presented.amount == amount


def test_line_reader_reads_lines_and_prints_decisions():
    out = io.StringIO()
    reader = LineReader(io.StringIO("04a1b2c3\n\n"), out)

    presented = reader.read(2.0)
    reader.show(LocalDecision(allow=False, reason=ReasonCode.CARD_LOST, online=True))

    assert presented is not None
    assert presented.credential.value == "04a1b2c3"
    assert "DENY CARD_LOST (online)" in out.getvalue()
