"""The audit trail is a hash chain: altering or removing a row is detected and named.

Tampering goes around the application on purpose: plain SQL inside ``unscoped``. On PostgreSQL a
trigger refuses UPDATE and DELETE on ``audit_events``, so the tamperer first switches triggers
off for the transaction (``session_replication_role = replica``, as a superuser could).
"""

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from onecard.platform.audit.models import AuditEvent
from onecard.platform.audit.record import (
    GENESIS,
    RequestInfo,
    record,
    request_context,
    verify_chain,
)
from onecard.platform.db.tenancy import unscoped
from onecard.platform.errors import ImmutableRecordError


@pytest.fixture
def events(session, tenant, make_person, system_actor, now):
    """Five committed events: tenant created, three people created, one custom event."""
    for _ in range(3):
        make_person()
    record(session, "test.checked", actor=system_actor, now=now, data={"fen": 1200})
    session.commit()
    rows = list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
    session.commit()  # SQLite: release the write lock a reading transaction takes
    return rows


@pytest.fixture
def tamper(session, is_postgres):
    """Factory: run raw SQL against audit_events the way an attacker with DB access would."""

    def _tamper(sql, **params):
        with unscoped(reason="test: tampering with the audit trail"):
            if is_postgres:
                session.execute(text("SET LOCAL session_replication_role = replica"))
            session.execute(text(sql), params)
        session.commit()

    return _tamper


@pytest.fixture
def verify_fresh(session_factory):
    """Verify the chain in a new session, as the nightly job would."""

    def _verify():
        with session_factory() as fresh:
            return verify_chain(fresh)

    return _verify


def test_untouched_chain_verifies(events, verify_fresh):
    report = verify_fresh()

    assert (report.events, report.first_bad, report.problem) == (len(events), None, None)


def test_chain_links_each_event_to_the_previous_one(events):
    assert events[0].prev_hash == GENESIS
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_altered_row_is_named_by_the_verifier(events, tamper, verify_fresh):
    victim = events[2]
    tamper("UPDATE audit_events SET actor_id = 'mallory' WHERE id = :id", id=victim.id)

    report = verify_fresh()

    assert report.first_bad.id == victim.id
    assert "altered" in report.problem


def test_altered_data_is_named_by_the_verifier(events, tamper, verify_fresh):
    victim = events[-1]
    tamper("UPDATE audit_events SET type = 'test.innocent' WHERE id = :id", id=victim.id)

    report = verify_fresh()

    assert report.first_bad.id == victim.id


def test_deleted_row_shows_as_a_sequence_jump(events, tamper, verify_fresh):
    tamper("DELETE FROM audit_events WHERE id = :id", id=events[2].id)

    report = verify_fresh()

    assert report.first_bad.id == events[3].id
    assert report.problem == "sequence jumps from 2 to 4 (rows removed)"


def test_audit_events_cannot_be_changed_through_the_orm(session, events):
    events[1].type = "test.rewritten"

    with pytest.raises(ImmutableRecordError):
        session.flush()
    session.rollback()


@pytest.mark.postgres_only
def test_database_refuses_raw_changes_to_audit_events(session, events):
    with pytest.raises(DBAPIError, match="append-only"), unscoped(reason="test"):
        session.execute(
            text("UPDATE audit_events SET actor_id = 'mallory' WHERE id = :id"),
            {"id": events[1].id},
        )
    session.rollback()


def test_request_context_is_recorded_and_covered_by_the_hash(
    session, events, tamper, verify_fresh, system_actor, now
):
    with request_context(RequestInfo(ip="10.0.0.7", request_id="req-42")):
        event = record(session, "test.with_request", actor=system_actor, now=now)
    tamper("UPDATE audit_events SET ip = '10.0.0.8' WHERE id = :id", id=event.id)

    assert (event.ip, event.request_id) == ("10.0.0.7", "req-42")
    assert verify_fresh().first_bad.id == event.id
