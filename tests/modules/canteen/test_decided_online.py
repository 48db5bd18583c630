"""A tap the POS asked online but got no answer for: the POS decides offline and uploads the
sale with the tap's ``req_id``. When the platform had already allowed (and posted) that tap,
the holder is charged once: the offline sale is recorded, flagged ``decided_online``, linked to
the online sale, and not posted. A tap the platform denied or never saw is charged offline."""

import json

from sqlalchemy import func, select

from onecard.modules.canteen import recordflow, setup
from onecard.modules.canteen.models import Sale
from onecard.modules.canteen.rules import Allowance, HolderRule
from onecard.modules.canteen.settlement import PosReport, settle_day
from onecard.platform.audit.models import AuditEvent
from onecard.platform.devices import services as devices
from onecard.platform.devices import taps
from onecard.platform.devices.wire import TapRequest
from onecard.platform.ledger.models import Entry
from onecard.platform.registry import Registry

RULE, ALLOWANCE = HolderRule(), Allowance(3000, 3)


def tap_online(world, t, card, req_id, at, amount_fen=1200, hh=12, mm=0):
    """The POS ``t`` asks the platform to sell ``amount_fen`` to ``card``; returns the outcome."""
    body = {"v": 1, "req_id": req_id, "credential": {"kind": "card_no", "value": card.card_no},
            "amount": amount_fen, "device_time": 1_788_220_800_000}  # fmt: skip
    request = TapRequest.model_validate_json(json.dumps(body))
    ref = devices.resolve(world.session, t.row.device_id)
    hooks = Registry.load().hooks_for(frozenset({"canteen"}))
    return taps.decide(world.session, ref, request, hooks, now=at(hh, mm))


def sold_offline(t, card, req_id, at, list_fen=1200, hh=12, mm=0) -> dict:
    """What the POS uploads when it decided the sale alone after ``req_id`` timed out."""
    _v, rec, _s = t.device.sell(card.card_no, at(hh, mm), RULE, ALLOWANCE, list_fen=list_fen)
    return {**rec, "req_id": req_id}


def ready(world, at, terminals, purse=5000):
    setup.set_rule(world.session, "staff", RULE, offline=ALLOWANCE, actor=world.actor,
                   now=at(8))  # fmt: skip
    return world.holder(purse=purse), terminals()


def offline_sales(world) -> list[Sale]:
    return list(world.session.scalars(select(Sale).where(Sale.source == "offline")))


def count(world, model) -> int:
    return world.session.scalar(select(func.count()).select_from(model)) or 0


def test_an_offline_sale_of_a_tap_allowed_online_is_recorded_and_charged_once(
    world, at, terminals, upload
):
    card, t = ready(world, at, terminals)
    online = tap_online(world, t, card, "t1", at)
    entries = count(world, Entry)

    upload(t, [sold_offline(t, card, "t1", at)])

    [sale] = offline_sales(world)
    online_sale = world.session.scalar(select(Sale).where(Sale.source == "online"))
    assert online.allow
    assert online_sale is not None
    assert (sale.amount_fen, sale.entry_id, sale.flags) == (1200, None, ["decided_online"])
    assert count(world, Entry) == entries  # nothing posted for the offline record
    assert world.balances(card) == {"subsidy": 0, "purse": 3800, "merchant": 1200}
    link = world.session.scalar(
        select(AuditEvent).where(AuditEvent.type == "canteen.sale.decided_online")
    )
    assert link is not None
    assert link.object_id == str(sale.id)
    assert (link.data["req_id"], link.data["online_sale_id"]) == ("t1", online_sale.id)
    assert link.data["entry_ids"] == list(online.entry_ids)
    assert world.failures == []


def test_an_offline_sale_of_a_tap_denied_online_is_charged_offline(world, at, terminals, upload):
    card, t = ready(world, at, terminals, purse=500)
    denied = tap_online(world, t, card, "t1", at)  # 12.00 asked, 5.00 in the purse

    upload(t, [sold_offline(t, card, "t1", at)])

    [sale] = offline_sales(world)
    assert not denied.allow
    assert (sale.entry_id is not None, sale.purse_fen, sale.receivable_fen) == (True, 500, 700)
    assert "decided_online" not in sale.flags
    assert world.balances(card) == {"subsidy": 0, "purse": 0, "merchant": 1200}


def test_an_offline_sale_of_a_tap_the_platform_never_saw_is_charged_offline(
    world, at, terminals, upload
):
    card, t = ready(world, at, terminals)

    upload(t, [sold_offline(t, card, "lost-1", at)])

    [sale] = offline_sales(world)
    assert (sale.entry_id is not None, sale.flags) == (True, [])
    assert world.balances(card) == {"subsidy": 0, "purse": 3800, "merchant": 1200}


def test_a_req_id_of_another_cards_allowed_tap_does_not_spare_the_charge(
    world, at, terminals, upload
):
    card, t = ready(world, at, terminals)
    other = world.holder(purse=5000)
    tap_online(world, t, other, "t1", at)

    upload(t, [sold_offline(t, card, "t1", at)])

    [sale] = offline_sales(world)
    assert (sale.entry_id is not None, sale.flags) == (True, [])
    assert world.balances(card)["purse"] == 3800


def test_a_replayed_or_reprocessed_record_of_a_tap_allowed_online_changes_nothing(
    world, at, terminals, upload, keyring
):
    card, t = ready(world, at, terminals)
    tap_online(world, t, card, "t1", at)
    record = sold_offline(t, card, "t1", at)
    upload(t, [record])
    sales, entries, events = count(world, Sale), count(world, Entry), count(world, AuditEvent)

    again = upload(t, [record])
    redone = recordflow.reprocess(world.session, keyring, actor=world.actor, now=at(15))

    assert (again.stored, again.duplicates, redone.recorded) == (0, 1, 0)
    assert (count(world, Sale), count(world, Entry)) == (sales, entries)
    assert count(world, AuditEvent) == events + 1  # the reprocess run itself
    assert world.balances(card) == {"subsidy": 0, "purse": 3800, "merchant": 1200}


def test_settlement_counts_a_sale_decided_online_once(world, at, terminals, upload):
    card, t = ready(world, at, terminals)
    tap_online(world, t, card, "t1", at)
    upload(t, [sold_offline(t, card, "t1", at)])
    [copy] = offline_sales(world)
    reports = {t.row.device_id: PosReport(1, 1200)}  # the POS sold once (it never got the answer)

    statement = settle_day(
        world.session, world.merchant, copy.business_day, reports, actor=world.actor, now=at(22)
    )

    assert statement.status == "balanced", statement.exceptions
    assert (statement.sales_count, statement.gross_fen, statement.ledger_fen) == (1, 1200, 1200)
