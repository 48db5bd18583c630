"""Concurrent spending from one purse on PostgreSQL (row locks, unique idempotency keys).

Each thread has its own session and sets the tenant scope itself: the scope is a context
variable, and a new thread starts with an empty context.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.errors import InsufficientFunds
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import balance_of, holder_account
from onecard.platform.ledger.models import Entry
from onecard.platform.ledger.reconcile import verify

pytestmark = pytest.mark.postgres_only

THREADS = 8


@pytest.fixture
def funded_holder(session, make_person, merchant, system_actor, now):
    """A holder whose purse holds 10000 fen, committed so that other sessions see it."""
    person = make_person()
    ops.top_up(session, person.id, 10000, channel="cash", actor=system_actor, now=now)
    session.commit()
    return person


def run_in_threads(work):
    """Run ``work(thread_no)`` in THREADS threads released together; return their results."""
    start = threading.Barrier(THREADS)

    def _run(n):
        start.wait()
        return work(n)

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(_run, range(THREADS)))


def test_concurrent_charges_never_overdraw_the_purse(
    session, session_factory, tenant, funded_holder, merchant, system_actor, now
):
    def spend(n):
        succeeded = 0
        with tenant_scope(tenant.id), session_factory() as s:
            for i in range(30):
                try:
                    ops.charge(
                        s,
                        funded_holder.id,
                        merchant,
                        100,
                        actor=system_actor,
                        now=now,
                        code="canteen.meal",
                        idempotency_key=f"t{n}:{i}",
                    )
                    s.commit()
                    succeeded += 1
                except InsufficientFunds:
                    s.rollback()
        return succeeded

    succeeded = sum(run_in_threads(spend))

    session.expire_all()
    final = balance_of(session, holder_account(session, funded_holder.id, ops.PURSE, now=now))
    assert final >= 0
    assert succeeded * 100 == 10000 - final
    assert final == 0  # 240 attempts for 100 meals' worth: refusals only once it is empty
    assert verify(session).ok


def test_one_idempotency_key_posted_from_eight_threads_makes_one_entry(
    session, session_factory, tenant, funded_holder, merchant, count_rows, system_actor, now
):
    def charge_once(_n):
        with tenant_scope(tenant.id), session_factory() as s:
            entry = ops.charge(
                s,
                funded_holder.id,
                merchant,
                100,
                actor=system_actor,
                now=now,
                code="canteen.meal",
                idempotency_key="pos-9:1",
            )
            s.commit()
            return entry.id

    entry_ids = set(run_in_threads(charge_once))

    session.expire_all()
    assert len(entry_ids) == 1
    assert count_rows(Entry) == 2  # the top-up and the one meal
    assert (
        balance_of(session, holder_account(session, funded_holder.id, ops.PURSE, now=now)) == 9900
    )
    assert verify(session).ok
