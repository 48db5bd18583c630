"""Paying a merchant what its settled day earned: Dr the merchant's settlement account, Cr bank
clearing; once per merchant and business day; above the four-eyes threshold only after a
second operator approves."""

from datetime import date

import pytest
from sqlalchemy import func, select

from onecard.modules.canteen import services
from onecard.modules.canteen.payout import decide_payout, request_payout
from onecard.modules.canteen.services import SaleRequest
from onecard.modules.canteen.settlement import PosReport, settle_day, statement_json
from onecard.platform.actors import Actor
from onecard.platform.audit.models import AuditEvent
from onecard.platform.errors import PermissionDenied, ValidationFailed
from onecard.platform.ledger.accounts import balance_of, tenant_account
from onecard.platform.ledger.models import Account, Entry
from onecard.platform.tenants.models import Tenant
from onecard.platform.tenants.services import update_tenant_settings

DAY = date(2026, 9, 1)
CLERK = Actor(type="operator", id="clerk", operator_id=1, permissions=frozenset({"*"}))
CHIEF = Actor(type="operator", id="chief", operator_id=2, permissions=frozenset({"*"}))


def settled_day(world, at):
    """Lunch 12.00 and dinner 10.00 on the fixed-price POS, settled at 22:00: net 22.00."""
    card = world.holder()
    for req, hh in (("l1", 12), ("d1", 18)):
        services.sell(world.session, world.fixed, card, SaleRequest(req), actor=world.actor,
                      now=at(hh))  # fmt: skip
    reports = {world.fixed.device_id: PosReport(2, 2200), world.free.device_id: PosReport(0, 0)}
    return settle_day(world.session, world.merchant, DAY, reports, actor=world.actor, now=at(22))


def tenant_of(world) -> Tenant:
    tenant = world.session.get(Tenant, world.site.tenant_id)
    assert tenant is not None
    return tenant


def threshold(world, at, fen: int) -> None:
    update_tenant_settings(world.session, tenant_of(world), {"approval_threshold_fen": fen},
                           actor=world.actor, now=at(8))  # fmt: skip


def entries(world) -> int:
    return world.session.scalar(select(func.count()).select_from(Entry)) or 0


def merchant_balance(world) -> int:
    """What the tenant still owes the merchant (its settlement account's normal balance)."""
    return balance_of(world.session, world.session.get(Account, world.merchant.account_id))


def test_a_payout_below_the_threshold_is_posted_at_once_and_only_once(world, at, journal):
    statement = settled_day(world, at)
    bank = balance_of(world.session, tenant_account(world.session, "bank_clearing"))

    request_payout(world.session, tenant_of(world), statement, actor=CLERK, now=at(23))
    posted = entries(world)
    request_payout(world.session, tenant_of(world), statement, actor=CLERK, now=at(23, 5))

    assert entries(world) == posted
    entry = world.session.get(Entry, statement.payout_entry_id)
    assert journal(entry) == [("Dr", "canteen.merchant", 2200), ("Cr", "bank_clearing", 2200)]
    assert entry is not None
    assert entry.idempotency_key == f"canteen:payout:{world.merchant.id}:2026-09-01"
    assert merchant_balance(world) == 0
    assert balance_of(world.session, tenant_account(world.session, "bank_clearing")) == bank - 2200
    shown = statement_json(statement)["payout"]
    assert (shown["status"], shown["amount_fen"], shown["requested_by"]) == (
        "posted", 2200, "clerk",
    )  # fmt: skip
    audited = world.session.scalars(
        select(AuditEvent.type).where(AuditEvent.type.like("canteen.payout.%"))
    ).all()
    assert audited == ["canteen.payout.posted"]


def test_a_payout_above_the_threshold_waits_for_a_second_operator(world, at):
    threshold(world, at, 2000)
    statement = settled_day(world, at)

    request_payout(world.session, tenant_of(world), statement, actor=CLERK, now=at(23))
    assert (statement.payout_status, statement.payout_entry_id) == ("awaiting_approval", None)
    assert merchant_balance(world) == 2200
    with pytest.raises(PermissionDenied):
        decide_payout(world.session, statement, True, actor=CLERK, now=at(23, 1))

    decide_payout(world.session, statement, True, actor=CHIEF, now=at(23, 2))

    assert statement.payout_status == "posted"
    assert (statement.payout_requested_by, statement.payout_decided_by) == ("clerk", "chief")
    assert merchant_balance(world) == 0


def test_a_rejected_payout_pays_nothing_and_can_be_asked_for_again(world, at):
    threshold(world, at, 2000)
    statement = settled_day(world, at)
    request_payout(world.session, tenant_of(world), statement, actor=CLERK, now=at(23))

    decide_payout(world.session, statement, False, actor=CHIEF, now=at(23, 1))
    assert (statement_json(statement)["payout"]["status"], merchant_balance(world)) == (
        "rejected", 2200,
    )  # fmt: skip

    request_payout(world.session, tenant_of(world), statement, actor=CLERK, now=at(23, 2))
    assert (statement.payout_status, statement.payout_decided_by) == ("awaiting_approval", None)


def test_a_day_with_nothing_posted_has_nothing_to_pay(world, at):
    statement = settle_day(world.session, world.merchant, DAY, {}, actor=world.actor, now=at(22))

    with pytest.raises(ValidationFailed, match="nothing to pay"):
        request_payout(world.session, tenant_of(world), statement, actor=CLERK, now=at(23))
    assert statement.payout_status is None


def test_the_payout_is_not_an_unexplained_posting_of_the_day_it_is_made(world, at):
    statement = settled_day(world, at)
    request_payout(world.session, tenant_of(world), statement, actor=CLERK, now=at(9, day=2))
    card = world.holder()
    services.sell(world.session, world.fixed, card, SaleRequest("l2"), actor=world.actor,
                  now=at(12, day=2))  # fmt: skip

    next_day = settle_day(
        world.session, world.merchant, date(2026, 9, 2),
        {world.fixed.device_id: PosReport(1, 1200)}, actor=world.actor, now=at(22, day=2),
    )  # fmt: skip

    assert next_day.status == "balanced", next_day.exceptions
