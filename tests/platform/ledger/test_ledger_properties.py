"""Invariants of the ledger under any sequence of operations (property-based).

Whatever the card centre does, in whatever order, and whichever requests are refused: the trial
balance is zero, every cached balance equals the journal, and no holder purse is negative.
Each operation is its own unit of work: committed when it succeeds, rolled back when refused.
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.errors import Conflict, DuplicateRequest, InsufficientFunds
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import balance_of, holder_accounts, open_account
from onecard.platform.ledger.models import Account
from onecard.platform.ledger.posting import reverse
from onecard.platform.ledger.reconcile import verify
from onecard.platform.people.schemas import PersonCreate
from onecard.platform.people.services import create_person
from onecard.testing.fixtures import unique

HOLDERS = 3
person = st.integers(0, HOLDERS - 1)
fen = st.integers(1, 5000)
operation = st.one_of(
    st.tuples(st.just("top_up"), person, fen),
    st.tuples(st.just("charge"), person, fen),
    st.tuples(st.just("subsidy"), person, fen),
    st.tuples(st.just("refund"), person, fen),
    st.tuples(st.just("transfer"), person, st.integers(1, HOLDERS - 1), fen),
    st.tuples(st.just("reverse"), st.integers(0, 40)),
)


class Desk:
    """One tenant's card centre, driven one committed operation at a time."""

    def __init__(self, session, actor, now):
        self.session, self.actor, self.now = session, actor, now
        from tests_platform_conftest_merchant import MERCHANT  # noqa: F401  (replaced below)


def _open_desk(session, actor, now):
    people = [
        create_person(session, PersonCreate(person_no=unique("P"), name="Holder",
                                            identity_class="staff"), actor=actor, now=now)
        for _ in range(HOLDERS)
    ]
    purses = [holder_accounts(session, p.id, now=now) for p in people]
    from onecard.platform.ledger.accounts import AccountTemplate
    from onecard.platform.ledger.models import AccountType

    merchant = open_account(
        session,
        AccountTemplate("merchant", AccountType.LIABILITY, "Liabilities:Merchants:Canteen",
                        "Canteen", None),
        now=now,
    )
    session.commit()
    return people, purses, merchant
