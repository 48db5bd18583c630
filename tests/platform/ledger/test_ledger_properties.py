"""Invariants of the ledger under any sequence of operations (property-based).

Whatever the card centre does, in whatever order, and whichever requests are refused: the trial
balance is zero, every cached balance equals the journal, and no holder account is negative.
Each operation is its own unit of work: committed when it succeeds, rolled back when refused.
Every example runs in a fresh tenant, so examples cannot see each other's money.
"""

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.errors import Conflict, DuplicateRequest, InsufficientFunds
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import (
    AccountTemplate,
    balance_of,
    holder_accounts,
    open_account,
)
from onecard.platform.ledger.models import Account, AccountType, Entry
from onecard.platform.ledger.posting import reverse
from onecard.platform.ledger.reconcile import verify
from onecard.platform.people.schemas import PersonCreate
from onecard.platform.people.services import create_person
from onecard.testing.fixtures import unique

HOLDERS = 3
CANTEEN = AccountTemplate(
    "merchant", AccountType.LIABILITY, "Liabilities:Merchants:Canteen", "Canteen", None
)

holder = st.integers(0, HOLDERS - 1)
fen = st.integers(1, 5000)
operation = st.one_of(
    st.tuples(st.just("top_up"), holder, fen),
    st.tuples(st.just("charge"), holder, fen),
    st.tuples(st.just("subsidy"), holder, fen),
    st.tuples(st.just("refund"), holder, fen),
    st.tuples(st.just("transfer"), holder, st.integers(1, HOLDERS - 1), fen),
    st.tuples(st.just("reverse"), st.integers(0, 1000)),
)


@dataclass
class CardCentre:
    """One tenant's holders and canteen, and the entries posted so far."""

    session: object
    actor: object
    now: object
    people: list[int]
    accounts: list[dict[str, Account]]
    merchant: Account
    posted: list[Entry] = field(default_factory=list)
    serial: int = 0

    def key(self) -> str:
        self.serial += 1
        return f"prop-{self.serial}"

    def run(self, op: tuple) -> Entry | None:
        s, actor, now = self.session, self.actor, self.now
        name, *args = op
        if name == "top_up":
            return ops.top_up(
                s, self.people[args[0]], args[1], channel="cash", actor=actor, now=now
            )
        if name == "charge":
            return ops.charge(
                s,
                self.people[args[0]],
                self.merchant,
                args[1],
                actor=actor,
                now=now,
                code="canteen.meal",
                idempotency_key=self.key(),
            )
        if name == "subsidy":
            return ops.grant_subsidy(s, self.people[args[0]], args[1], actor=actor, now=now)
        if name == "refund":
            return ops.refund(s, self.people[args[0]], args[1], actor=actor, now=now)
        if name == "transfer":
            source, target = args[0], (args[0] + args[1]) % HOLDERS
            return ops.transfer(
                s,
                self.accounts[source][ops.PURSE],
                self.accounts[target][ops.PURSE],
                args[2],
                actor=actor,
                now=now,
            )
        if not self.posted:
            return None
        entry = self.posted[args[0] % len(self.posted)]
        return reverse(s, entry, idempotency_key=self.key(), actor=actor, now=now)

    def apply(self, op: tuple) -> None:
        """Run ``op`` as one unit of work: commit it, or roll it back when it is refused."""
        try:
            entry = self.run(op)
        except DuplicateRequest:
            raise  # every key here is new: a duplicate would be a bug
        except (InsufficientFunds, Conflict):
            self.session.rollback()
            return
        self.session.commit()
        if entry is not None:
            self.posted.append(entry)


def open_card_centre(session, actor, now) -> CardCentre:
    people = [
        create_person(
            session,
            PersonCreate(person_no=unique("P"), name="Holder", identity_class="staff"),
            actor=actor,
            now=now,
        ).id
        for _ in range(HOLDERS)
    ]
    accounts = [holder_accounts(session, pid, now=now) for pid in people]
    merchant = open_account(session, CANTEEN, now=now)
    session.commit()
    return CardCentre(session, actor, now, people, accounts, merchant)


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=st.lists(operation, max_size=25))
def test_any_sequence_of_operations_keeps_the_books_balanced(
    operations, make_tenant, session_factory, system_actor, now
):
    tenant = make_tenant()
    with tenant_scope(tenant.id), session_factory() as session:
        centre = open_card_centre(session, system_actor, now)
        for op in operations:
            centre.apply(op)

        report = verify(session)
        holder_balances = [
            balance_of(session, account)
            for accounts in centre.accounts
            for account in accounts.values()
        ]

    assert report.ok, report.problems
    assert report.trial_balance_fen == 0
    assert min(holder_balances) >= 0
