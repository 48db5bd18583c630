"""Console benchmark: p50/p95 of the card-centre pages with 1,000,000 people and cards.

Run: ``.venv/bin/python bench/bench_console.py [--people N] [--requests N] [--statement N]``
(``make bench`` runs it with the defaults). It works in a fresh PostgreSQL database made by
``scripts/pg-test-db.sh`` (dropped afterwards unless ``--keep``): people and cards are loaded
by COPY (the loader of ``bench_platform.py``) and every person gets a purse account (set-based
inserts); then a holder with a long statement, pending approvals and a fleet of devices are
made through the platform's services. The real Flask app
(``onecard.web.create_app``) serves the pages to a logged-in operator through Flask's test
client, so the figures are the app's own time (routing, queries, templates) without a network.
Nothing is asserted: the figures go to ``docs/benchmarks.md``. Target: p95 ≤ 200 ms per page.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from bench_platform import (
    ACTOR,
    NOW,
    drop_database,
    fresh_database,
    load_people,
    machine,
    percentile,
)
from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from onecard.config import DatabaseSettings, SecuritySettings, Settings
from onecard.platform.approvals import services as approvals
from onecard.platform.authz.services import AuthPolicy, create_operator
from onecard.platform.db.engine import make_engine, make_session_factory
from onecard.platform.db.migrate import upgrade
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices.services import NewDevice, add_device
from onecard.platform.ledger import operations as ops
from onecard.platform.people.schemas import PersonCreate
from onecard.platform.people.services import create_person
from onecard.platform.tenants.models import Tenant
from onecard.web import create_app

TARGET_MS = 200.0
USERNAME, PASSWORD = "bench", "bench-password-0123"
WARM_UP = 10


@dataclass(frozen=True)
class Fixture:
    """What the pages are asked about: the tenant, sampled rows and the long-statement holder."""

    tenant_slug: str
    people: list[tuple[int, str, str]]  # (id, person number, name)
    card_ids: list[int]
    holder_id: int
    statement_lines: int


# ---- data ---------------------------------------------------------------------------------------


def open_purses(engine: Engine, tenant_id: int) -> int:
    """Every person's purse account with its balance row, as services open them on first use
    (set-based inserts: the loader's people have none, a running campus's mostly do)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ledger_accounts (tenant_id, code, name, type, kind, currency,"
                " owner_type, owner_id, min_balance_fen, opened_at)"
                " SELECT tenant_id, :head || id || :tail, 'Purse',"
                " 'liability', 'holder.purse', 'CNY', 'person', id, 0, :now"
                " FROM people WHERE tenant_id = :t"
            ),
            {"t": tenant_id, "now": NOW, "head": "Liabilities:Holders:", "tail": ":Purse"},
        )
        opened = conn.execute(
            text(
                "INSERT INTO ledger_balances (account_id, tenant_id, raw_fen, line_count,"
                " updated_at) SELECT id, tenant_id, 0, 0, :now FROM ledger_accounts"
                " WHERE tenant_id = :t AND kind = 'holder.purse'"
            ),
            {"t": tenant_id, "now": NOW},
        ).rowcount
        conn.execute(text("ANALYZE ledger_accounts"))
        conn.execute(text("ANALYZE ledger_balances"))
    return int(opened)


def sample_people(s: Session, tenant_id: int, n: int) -> list[tuple[int, str, str]]:
    """``n`` random people of the tenant (id, number, name) for the per-person pages."""
    rows = s.execute(
        text(
            "SELECT id, person_no, name FROM people TABLESAMPLE SYSTEM (1)"
            " WHERE tenant_id = :t AND deleted_at IS NULL LIMIT :n"
        ),
        {"t": tenant_id, "n": n},
    ).all()
    return [(int(r.id), str(r.person_no), str(r.name)) for r in rows]


def long_statement(s: Session, entries: int) -> int:
    """A holder whose purse has ``entries`` postings: top-ups and meals, one a day."""
    person = create_person(
        s,
        PersonCreate(person_no="LONG0001", name="账单 长", identity_class="staff"),
        actor=ACTOR,
        now=NOW,
    )
    merchant = ops.tenant_account(s, "cash_desk")
    for n in range(entries):
        at = NOW - timedelta(hours=entries - n)
        if n % 10 == 0:
            ops.top_up(s, person.id, 50_000, channel="cash", actor=ACTOR, now=at)
        else:
            ops.charge(
                s,
                person.id,
                merchant,
                1200,
                actor=ACTOR,
                now=at,
                code="bench.meal",
                idempotency_key=f"meal:{n}",
            )
        if n % 500 == 499:
            s.commit()
    s.commit()
    return person.id


def pending_approvals(s: Session, tenant: Tenant, people: list[tuple[int, str, str]]) -> None:
    """Refunds above the four-eyes threshold, filed and left pending (the approvals queue)."""
    for n, (pid, number, name) in enumerate(people):
        approvals.submit(
            s,
            tenant,
            "refund",
            {
                "person_id": pid,
                "amount_fen": 90_000,
                "memo": "bench",
                "idempotency_key": f"bench-refund:{n}",
            },
            actor=ACTOR,
            now=NOW,
            amount_fen=90_000,
            summary=f"refund 90000 fen to {number} {name}",
        )
    s.commit()


def fleet(s: Session, count: int) -> None:
    """``count`` canteen POS and door readers registered through the device service."""
    for n in range(count):
        kind = "pos" if n % 3 else "door"
        add_device(
            s,
            NewDevice(f"bench-{kind}-{n:05d}", kind, module="canteen" if n % 3 else None),
            actor=ACTOR,
            now=NOW,
        )
    s.commit()


def prepare(engine: Engine, args: argparse.Namespace) -> Fixture:
    """Load people and cards, then the operator, the holder, approvals and devices."""
    tenant_id, _numbers, _names, _cards = load_people(
        engine.url.render_as_string(False), args.people
    )
    started = time.perf_counter()
    purses = open_purses(engine, tenant_id)
    print(f"  opened {purses:,} purses in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    sessions = make_session_factory(engine)
    with sessions() as s, tenant_scope(tenant_id):
        tenant = s.get(Tenant, tenant_id)
        assert tenant is not None
        create_operator(
            s, USERNAME, PASSWORD, actor=ACTOR, now=NOW, policy=AuthPolicy(), roles=["tenant_admin"]
        )
        s.commit()
        holder_id = long_statement(s, args.statement)
        people = sample_people(s, tenant_id, args.requests)
        pending_approvals(s, tenant, people[: args.approvals])
        fleet(s, args.devices)
        cards = s.scalars(
            text("SELECT id FROM cards WHERE person_id = ANY(:ids)"),
            {"ids": [p[0] for p in people]},
        )
        card_ids = [int(c) for c in cards]
        lines = s.scalar(
            text("SELECT count(*) FROM ledger_lines WHERE tenant_id = :t"), {"t": tenant_id}
        )
    took = time.perf_counter() - started
    print(
        f"  holder with {args.statement:,} entries, {args.approvals} pending approvals, "
        f"{args.devices:,} devices in {took:.1f} s ({lines:,} ledger lines)"
    )
    return Fixture(tenant.slug, people, card_ids, holder_id, args.statement)


# ---- requests -----------------------------------------------------------------------------------


def logged_in(engine: Engine, slug: str) -> FlaskClient:
    """A test client of the real app with the bench operator logged in to the console."""
    settings = Settings(
        database=DatabaseSettings(url=engine.url.render_as_string(False)),
        security=SecuritySettings(secret_key="bench-secret-key-0123456789abcdef"),
    )
    client = create_app(settings, engine=engine).test_client()
    client.get("/console/login")
    with client.session_transaction() as flask_session:
        token = flask_session["csrf"]
    form = {"tenant": slug, "username": USERNAME, "password": PASSWORD, "csrf_token": token}
    resp = client.post("/console/login", data=form)
    if resp.status_code != 303:
        raise SystemExit(f"login failed: {resp.status_code}")
    return client


def pages(fx: Fixture, rng: random.Random) -> dict[str, Callable[[int], str]]:
    """Page label → the URL of its ``n``-th request."""
    people, cards = fx.people, fx.card_ids
    statement_pages = max(1, fx.statement_lines // 50)
    return {
        "people list, no query": lambda n: "/console/people",
        "people list, name search": lambda n: f"/console/people?q={people[n % len(people)][2]}",
        "people list, person number": lambda n: f"/console/people?q={people[n % len(people)][1]}",
        "people list, one-character surname": (
            lambda n: f"/console/people?q={people[n % len(people)][2][0]}"
        ),
        "person detail": lambda n: f"/console/people/{people[n % len(people)][0]}",
        "card detail": lambda n: f"/console/cards/{cards[n % len(cards)]}",
        "statement, first page": lambda n: f"/console/accounts/person/{fx.holder_id}",
        "statement, random page": (
            lambda n: (
                f"/console/accounts/person/{fx.holder_id}"
                f"?offset={rng.randrange(statement_pages) * 50}"
            )
        ),
        "approvals queue": lambda n: "/console/approvals",
        "devices list": lambda n: f"/console/devices?offset={(n % 20) * 50}",
        "reports page (top-ups, daily)": lambda n: "/console/reports",
        "reports page (balances)": lambda n: "/console/reports?kind=balances",
    }


def time_page(client: FlaskClient, url_of: Callable[[int], str], count: int) -> dict[str, float]:
    """p50/p95 in ms of ``count`` GETs after a short warm-up, and the first request's time
    (cold caches: the liability report's minute-long snapshot, the database's pages); any
    non-200 stops the run."""
    started = time.perf_counter()
    _get(client, url_of(0))
    first = (time.perf_counter() - started) * 1000
    for n in range(1, WARM_UP):
        _get(client, url_of(n))
    times = []
    for n in range(count):
        url = url_of(n)
        started = time.perf_counter()
        _get(client, url)
        times.append((time.perf_counter() - started) * 1000)
    return {
        "first": first,
        "p50": statistics.median(times),
        "p95": percentile(times, 95),
        "n": len(times),
    }


def _get(client: FlaskClient, url: str) -> None:
    resp = client.get(url)
    if resp.status_code != 200:
        raise SystemExit(f"GET {url}: {resp.status_code}")


def report(results: dict[str, dict[str, float]]) -> None:
    """The table of figures, with the target verdict per page."""
    print(
        f"  {'page':<36} {'first ms':>8} {'p50 ms':>8} {'p95 ms':>8} {'n':>5}"
        f"  target p95 ≤ {TARGET_MS:.0f} ms"
    )
    for label, t in results.items():
        verdict = "met" if t["p95"] <= TARGET_MS else "MISSED"
        print(
            f"  {label:<36} {t['first']:8.1f} {t['p50']:8.1f} {t['p95']:8.1f} {t['n']:5d}"
            f"  {verdict}"
        )


def main() -> None:
    """Parse options, build the data in a fresh database, time every page, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300, help="timed requests per page")
    parser.add_argument("--statement", type=int, default=5000, help="entries of the holder")
    parser.add_argument("--approvals", type=int, default=200)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--only", action="append", help="time only pages containing this text")
    parser.add_argument("--keep", action="store_true", help="keep the database (prints its URL)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"command: {' '.join(['.venv/bin/python bench/bench_console.py', *sys.argv[1:]])}")
    url = fresh_database()
    try:
        engine = make_engine(url)
        upgrade(engine)
        fx = prepare(engine, args)
        client = logged_in(engine, fx.tenant_slug)
        results = {}
        for label, url_of in pages(fx, random.Random(11)).items():
            if args.only and not any(o in label for o in args.only):
                continue
            results[label] = time_page(client, url_of, args.requests)
        print(f"[console] {args.people:,} people and cards, {args.requests} requests per page")
        report(results)
    finally:
        if args.keep:
            print(f"kept database: {url}")
        else:
            drop_database(url)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
