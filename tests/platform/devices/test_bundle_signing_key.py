"""The tenant's config-bundle signing key: one active key per tenant, even under a race.

``bundles.signing_key`` creates the key on first use. The partial unique index of migration
``0007_bundle_key_unique`` keeps one active key per tenant, and a first use that loses the race
returns the winner's key instead of failing or adding a second one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from onecard.platform.actors import Actor
from onecard.platform.db.engine import make_engine, make_session_factory
from onecard.platform.db.migrate import alembic_config, upgrade
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices import bundles
from onecard.platform.devices.models import SigningKey
from onecard.platform.secrets import SecretBox
from onecard.platform.tenants.models import Tenant
from onecard.platform.tenants.services import create_tenant
from onecard.testing.fixtures import unique

REVISION = "0007_bundle_key_unique"
RACERS = 6
WAIT = 30.0


@pytest.fixture
def box() -> SecretBox:
    return SecretBox("test-secret-key-0123456789abcdef")


def _first_use(sf: sessionmaker[Session], tenant_id: int, box: SecretBox, now: datetime) -> str:
    """One unit of work that needs the signing key: its key id, committed."""
    with sf() as s, tenant_scope(tenant_id):
        key_id = bundles.signing_key(s, box, now=now).key_id
        s.commit()
        return key_id


def _active_key_ids(sf: sessionmaker[Session], tenant_id: int) -> list[str]:
    with sf() as s, tenant_scope(tenant_id):
        return list(s.scalars(select(SigningKey.key_id).where(SigningKey.active)))


def _key_row(tenant_id: int, key_id: str, now: datetime, *, active: bool = True) -> SigningKey:
    return SigningKey(
        tenant_id=tenant_id,
        key_id=key_id,
        public_key="cHVibGlj",
        private_sealed="sealed",
        active=active,
        created_at=now,
    )


def _race(racers: int, run: Callable[[], str]) -> list[str]:
    """Run ``run`` in ``racers`` threads released together; their results (errors re-raised)."""
    start = threading.Barrier(racers, timeout=WAIT)
    results: list[str] = []
    errors: list[BaseException] = []

    def racer() -> None:
        try:
            start.wait()
            results.append(run())
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=racer) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    assert not any(t.is_alive() for t in threads), "a racer is stuck"
    if errors:
        raise errors[0]
    return results


def test_first_use_creates_the_key_and_later_uses_return_it(
    session_factory: sessionmaker[Session], tenant: Tenant, box: SecretBox, now: datetime
) -> None:
    first = _first_use(session_factory, tenant.id, box, now)
    again = _first_use(session_factory, tenant.id, box, now)

    assert again == first
    assert _active_key_ids(session_factory, tenant.id) == [first]


def test_each_tenant_gets_its_own_active_key(
    session_factory: sessionmaker[Session],
    make_tenant: Callable[..., Tenant],
    box: SecretBox,
    now: datetime,
) -> None:
    a, b = make_tenant(), make_tenant()

    key_a = _first_use(session_factory, a.id, box, now)
    key_b = _first_use(session_factory, b.id, box, now)

    assert key_a != key_b
    assert _active_key_ids(session_factory, a.id) == [key_a]
    assert _active_key_ids(session_factory, b.id) == [key_b]


def test_database_refuses_a_second_active_key_for_a_tenant(
    session: Session, tenant: Tenant, box: SecretBox, now: datetime
) -> None:
    bundles.signing_key(session, box, now=now)

    session.add(_key_row(tenant.id, "second-active", now))
    with pytest.raises(IntegrityError, match=r"(?i)unique"):
        session.flush()
    session.rollback()


def test_a_retired_key_leaves_room_for_a_new_active_key(
    session: Session, tenant: Tenant, box: SecretBox, now: datetime
) -> None:
    session.add(_key_row(tenant.id, "retired", now, active=False))
    session.flush()

    key = bundles.signing_key(session, box, now=now)

    assert key.key_id != "retired"
    assert key.active
    session.rollback()


def test_a_first_use_that_lost_the_race_returns_the_winners_key(
    session_factory: sessionmaker[Session],
    tenant: Tenant,
    box: SecretBox,
    now: datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    winner = _first_use(session_factory, tenant.id, box, now)
    real_read = bundles._active_key
    reads: list[object] = []

    def read_before_the_winner_committed(session: Session) -> SigningKey | None:
        reads.append(session)
        return None if len(reads) == 1 else real_read(session)

    monkeypatch.setattr(bundles, "_active_key", read_before_the_winner_committed)

    loser = _first_use(session_factory, tenant.id, box, now)

    assert loser == winner
    assert _active_key_ids(session_factory, tenant.id) == [winner]


def test_concurrent_first_uses_agree_on_one_key(
    session_factory: sessionmaker[Session], tenant: Tenant, box: SecretBox, now: datetime
) -> None:
    key_ids = _race(RACERS, lambda: _first_use(session_factory, tenant.id, box, now))

    assert len(key_ids) == RACERS
    assert len(set(key_ids)) == 1
    assert _active_key_ids(session_factory, tenant.id) == key_ids[:1]


@pytest.mark.postgres_only
def test_two_transactions_that_both_saw_no_key_end_with_one(
    session_factory: sessionmaker[Session],
    tenant: Tenant,
    box: SecretBox,
    now: datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Both transactions read "no key" before either inserts: the interleaving that used to
    # create two active keys. The loser's insert waits for the winner's commit, then re-reads.
    both_read = threading.Barrier(2, timeout=WAIT)
    real_read = bundles._active_key
    held = threading.local()

    def read_then_wait_for_the_other(session: Session) -> SigningKey | None:
        key = real_read(session)
        if key is None and not getattr(held, "done", False):
            held.done = True
            both_read.wait()
        return key

    monkeypatch.setattr(bundles, "_active_key", read_then_wait_for_the_other)

    key_ids = _race(2, lambda: _first_use(session_factory, tenant.id, box, now))

    assert key_ids[0] == key_ids[1]
    assert _active_key_ids(session_factory, tenant.id) == key_ids[:1]


def test_upgrade_keeps_the_newest_of_several_active_keys(tmp_path: Path, now: datetime) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'before-0007.db'}")
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    before = ScriptDirectory.from_config(cfg).get_revision(REVISION).down_revision
    assert isinstance(before, str)
    upgrade(engine, before)
    sf = make_session_factory(engine)
    with sf() as s:
        tenant = create_tenant(s, unique("mig"), "Migration", actor=Actor.system("t"), now=now)
        with tenant_scope(tenant.id):
            s.add_all(_key_row(tenant.id, f"raced-{n}", now) for n in range(3))
            s.commit()

    upgrade(engine)

    assert _active_key_ids(sf, tenant.id) == ["raced-2"]
    with sf() as s, tenant_scope(tenant.id):
        assert s.scalar(select(func.count(SigningKey.id))) == 3  # older keys still verify
    engine.dispose()
