"""A refused key request stays audited even when the caller's transaction rolls back."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from onecard.keys.softhsm import SoftHsm
from onecard.platform.audit.models import AuditEvent
from onecard.platform.cards.keyring import PURSE, Keyring, key_errors
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.errors import PermissionDenied

KEK = bytes(range(32))


@pytest.fixture
def keyring(tmp_path) -> Keyring:
    return Keyring(SoftHsm(tmp_path / "keys.store", KEK, create=True))


def _ask_for_load_key_as_canteen(service, tenant_id):
    with key_errors():
        service.card_personalisation(
            module="canteen",
            tenant_id=tenant_id,
            application=PURSE,
            key_names=["DLK"],
            key_version=1,
            factors=(bytes(8),),
        )


def test_refusal_carries_its_audit_event_past_a_rollback(
    keyring, session, tenant, system_actor, now
):
    service = keyring.service(session, actor=system_actor, now=now)

    with pytest.raises(PermissionDenied) as refused:
        _ask_for_load_key_as_canteen(service, tenant.id)

    [(tenant_id, event_type, _actor, data)] = refused.value.lasting_audit
    assert (tenant_id, event_type, data["module"]) == (tenant.id, "keys.access_denied", "canteen")


def test_refusal_through_the_api_path_is_in_the_audit_trail_after_rollback(
    keyring, session_factory, tenant, system_actor, now
):
    from onecard.platform.audit.record import record

    with session_factory() as s:
        service = keyring.service(s, actor=system_actor, now=now)
        with pytest.raises(PermissionDenied) as refused:
            _ask_for_load_key_as_canteen(service, tenant.id)
        s.rollback()  # what the web layer does with a failed request
        for tid, event_type, actor, data in refused.value.lasting_audit:
            with tenant_scope(tid):
                record(s, event_type, actor=actor, now=now, data=data)
        s.commit()

    with session_factory() as s, tenant_scope(tenant.id):
        types = set(s.scalars(select(AuditEvent.type)))
    assert "keys.access_denied" in types
