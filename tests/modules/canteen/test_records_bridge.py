"""The bridge's ``up/records`` route hands a POS's stored records to canteen; when canteen fails
the records stay stored and acknowledged, and ``reprocess`` records them later, once.

These tests commit (the bridge works in sessions of its own, as in production)."""

import json

import pytest
from sqlalchemy import func, select
from tests.modules.canteen.conftest import batch_payload

from onecard.keys.softhsm import SoftHsm
from onecard.modules.canteen import recordflow, setup, terminalkeys
from onecard.modules.canteen.models import Sale
from onecard.modules.canteen.rules import Allowance, HolderRule
from onecard.platform.cards.keyring import Keyring
from onecard.platform.devices.bridge import Bridge, Connection
from onecard.platform.devices.models import DeviceRecord
from onecard.platform.secrets import SecretBox
from onecard.platform.tenants.services import set_module_enabled
from onecard.testing.cardkit import KEK


@pytest.fixture
def bridge(session_factory, registry):
    """A bridge on the test database with the installed modules; what it publishes is kept."""
    b = Bridge(session_factory, Connection(), box=SecretBox("canteen-test-secret-0123"),
               registry=registry)  # fmt: skip
    b.sent = []  # type: ignore[attr-defined]
    b.publish = lambda name, payload, **_kw: b.sent.append((name, json.loads(payload)))  # type: ignore[method-assign]
    return b


@pytest.fixture
def sale_ready(world, at, terminals):
    """Canteen on for the tenant, a staff holder allowed 30.00 offline, a POS, one sale of
    12.00 it decided offline; committed so the bridge sees it."""
    set_module_enabled(world.session, "canteen", True, actor=world.actor, now=at(8))
    setup.set_rule(world.session, "staff", HolderRule(), offline=Allowance(3000, 3),
                   actor=world.actor, now=at(8))  # fmt: skip
    card, t = world.holder(purse=5000), terminals()
    _v, rec, _s = t.device.sell(card.card_no, at(12), HolderRule(), Allowance(3000, 3),
                                list_fen=1200)  # fmt: skip
    world.session.commit()
    return card, t, rec


def recorded_sales(world) -> int:
    return world.session.scalar(select(func.count()).select_from(Sale)) or 0


def test_records_arriving_through_the_bridge_become_a_posted_sale(world, bridge, sale_ready):
    card, t, rec = sale_ready

    bridge.handle(f"oc/v1/{t.row.device_id}/up/records", batch_payload(t, [rec]))

    [(topic, ack)] = bridge.sent
    assert (topic, ack["acked_upto"]) == (f"oc/v1/{t.row.device_id}/down/ack", 1)
    sale = world.session.scalar(select(Sale))
    assert sale is not None
    assert (sale.amount_fen, sale.entry_id is not None, sale.flags) == (1200, True, [])
    assert world.balances(card) == {"subsidy": 0, "purse": 3800, "merchant": 1200}


def test_a_failed_module_keeps_the_records_and_reprocess_records_them_once(
    world, bridge, sale_ready, keyring, tmp_path, at
):
    card, t, rec = sale_ready
    terminalkeys.install_keyring(Keyring(SoftHsm(tmp_path / "wrong.store", KEK, create=True)))

    bridge.handle(f"oc/v1/{t.row.device_id}/up/records", batch_payload(t, [rec]))

    assert bridge.sent[0][1]["acked_upto"] == 1  # stored and acknowledged all the same
    assert bridge.counts[("up/records", "module_error")] == 1
    assert world.session.scalar(select(func.count()).select_from(DeviceRecord)) == 1
    assert recorded_sales(world) == 0

    first = recordflow.reprocess(world.session, keyring, actor=world.actor, now=at(15))
    again = recordflow.reprocess(world.session, keyring, actor=world.actor, now=at(16))

    assert (first.records, first.recorded, first.failed) == (1, 1, {})
    assert (again.records, again.recorded) == (0, 0)
    assert world.balances(card) == {"subsidy": 0, "purse": 3800, "merchant": 1200}


def test_reprocess_names_a_device_that_still_fails_and_keeps_its_records(
    world, bridge, sale_ready, tmp_path, at
):
    _card, t, rec = sale_ready
    wrong = Keyring(SoftHsm(tmp_path / "wrong.store", KEK, create=True))
    terminalkeys.install_keyring(wrong)
    bridge.handle(f"oc/v1/{t.row.device_id}/up/records", batch_payload(t, [rec]))

    report = recordflow.reprocess(world.session, wrong, actor=world.actor, now=at(15))

    assert (report.recorded, list(report.failed)) == (0, [t.row.device_id])
    assert recorded_sales(world) == 0
