"""The demo tenant ``make run`` starts with: sites, org units, people, cards and balances.

Deterministic (seeded random) so that every fresh start looks the same; idempotent: a tenant
that already exists is left alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.platform.actors import Actor
from onecard.platform.authz.services import AuthPolicy, create_operator
from onecard.platform.cards.lifecycle import NewCard, issue_card, report_loss
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.ledger import operations as ops
from onecard.platform.ledger.accounts import AccountTemplate, open_account
from onecard.platform.ledger.models import AccountType
from onecard.platform.people.schemas import PersonCreate
from onecard.platform.people.services import create_person
from onecard.platform.tenants.models import Tenant
from onecard.platform.tenants.services import create_org_unit, create_site, create_tenant

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗"
GIVEN = "伟芳娜敏静丽强磊洋艳勇军杰娟涛明超秀霞平刚桂英华"
UNITS = (
    ("ENG", "工程学院 School of Engineering"),
    ("SCI", "理学院 School of Science"),
    ("ADM", "行政处 Administration"),
    ("LOG", "后勤处 Logistics"),
)


@dataclass(frozen=True)
class DemoLogin:
    """What ``make run`` prints."""

    tenant: str
    username: str
    password: str
    created: bool


def seed_demo(
    session: Session,
    slug: str,
    username: str,
    password: str,
    *,
    people: int,
    now: datetime,
    policy: AuthPolicy,
) -> DemoLogin:
    """Create the demo tenant unless it exists; never commits."""
    if session.scalar(select(Tenant.id).where(Tenant.slug == slug)) is not None:
        return DemoLogin(slug, username, password, created=False)
    actor = Actor.system("seed-demo")
    tenant = create_tenant(session, slug, "示范大学 Demo University", actor=actor, now=now)
    with tenant_scope(tenant.id):
        create_operator(
            session,
            username,
            password,
            actor=actor,
            now=now,
            policy=policy,
            display_name="Demo administrator",
            roles=["tenant_admin"],
        )
        create_operator(
            session,
            "finance",
            password,
            actor=actor,
            now=now,
            policy=policy,
            display_name="Demo finance officer",
            roles=["finance"],
        )
        _seed_people(session, people, actor, now)
    return DemoLogin(slug, username, password, created=True)


def _seed_people(session: Session, count: int, actor: Actor, now: datetime) -> None:
    rng = random.Random(20260901)
    north = create_site(
        session, "north", "北校区 North campus", "Asia/Shanghai", actor=actor, now=now
    )
    south = create_site(
        session, "south", "南校区 South campus", "Asia/Shanghai", actor=actor, now=now
    )
    units = [
        create_org_unit(
            session, code, name, actor=actor, now=now, site_id=(north if n % 2 == 0 else south).id
        )
        for n, (code, name) in enumerate(UNITS)
    ]
    canteen = open_account(
        session,
        AccountTemplate(
            "merchant",
            AccountType.LIABILITY,
            "Liabilities:Merchants:Canteen-1",
            "第一食堂 Canteen 1",
            None,
        ),
        now=now,
    )
    for n in range(1, count + 1):
        _seed_person(session, n, rng, units[n % len(units)].id, canteen.id, actor, now)


def _seed_person(
    session: Session,
    n: int,
    rng: random.Random,
    unit_id: int,
    canteen_id: int,
    actor: Actor,
    now: datetime,
) -> None:
    name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2)))
    identity = "staff" if n % 5 == 0 else "student"
    person = create_person(
        session,
        PersonCreate(
            person_no=f"{'T' if identity == 'staff' else 'S'}{2026000 + n}",
            name=name,
            identity_class=identity,
            org_unit_id=unit_id,
        ),
        actor=actor,
        now=now,
    )
    # UIDs 10000000.. are what the simulated fleet's readers present (card n-1 of its range).
    spec = NewCard(card_no=f"{88000000 + n}", uid=f"{0x10000000 + n - 1:08X}", deposit_fen=2000)
    card = issue_card(session, person, spec, actor=actor, now=now)
    ops.top_up(
        session,
        person.id,
        rng.choice((5000, 10000, 20000, 30000)),
        channel="cash",
        actor=actor,
        now=now,
        idempotency_key=f"demo:topup:{n}",
    )
    if identity == "student":
        ops.grant_subsidy(
            session,
            person.id,
            15000,
            actor=actor,
            now=now,
            idempotency_key=f"demo:subsidy:{n}",
            memo="2026 autumn meal subsidy",
        )
    from onecard.platform.ledger.models import Account

    merchant = session.get(Account, canteen_id)
    assert merchant is not None
    for meal in range(rng.randint(0, 4)):
        ops.charge(
            session,
            person.id,
            merchant,
            rng.choice((800, 1000, 1200, 1500)),
            actor=actor,
            now=now,
            code="canteen.meal",
            idempotency_key=f"demo:meal:{n}:{meal}",
            occurred_at=now - timedelta(hours=rng.randint(1, 72)),
        )
    if n % 37 == 0:
        report_loss(session, card, actor=actor, now=now)
