"""A first worked example through the public services (more in the ledger tests)."""

from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import balance_of, holder_account


def test_cash_top_up_credits_the_purse(session, tenant, make_person, system_actor, now):
    person = make_person()
    ops.top_up(session, person.id, 10000, channel="cash", actor=system_actor, now=now)
    purse = holder_account(session, person.id, "holder.purse", now=now)
    assert balance_of(session, purse) == 10000
