"""Operators logging in (throttling, lockout, TOTP), bearer tokens, roles and data scopes."""

from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest

from onecard.platform.authz import services as authz
from onecard.platform.authz.models import Operator
from onecard.platform.errors import AuthenticationFailed, NotFound, ValidationFailed
from onecard.platform.people.services import get_person, search_people
from onecard.platform.secrets import SecretBox
from onecard.platform.tenants.services import create_org_unit

PASSWORD = "correct horse battery"  # the password make_operator gives every operator
POLICY = authz.AuthPolicy(max_failures=3, lockout_minutes=15)


@pytest.fixture
def box():
    return SecretBox("k" * 32)


@pytest.fixture
def operator(make_operator):
    return make_operator("alice")[0]


@pytest.fixture
def login(session, tenant, box, now):
    """Factory: one login attempt at the console, ``at`` minutes after ``now``."""

    def _login(password=PASSWORD, *, totp=None, at=0, username="alice"):
        return authz.login(
            session,
            tenant,
            username,
            password,
            totp=totp,
            now=now + timedelta(minutes=at),
            policy=POLICY,
            box=box,
        )

    return _login


def test_login_with_the_right_password_returns_a_token(operator, login):
    result = login()

    assert result.ok
    assert result.token
    assert result.operator_id == operator.id


def test_wrong_password_is_refused_and_counted(session, operator, login):
    result = login("not the password")

    assert (result.ok, result.reason) == (False, "invalid credentials")
    assert session.get(Operator, operator.id).failed_logins == 1


def test_unknown_operator_gets_the_same_answer_as_a_wrong_password(operator, login):
    assert login(username="mallory").reason == login("not the password").reason


def test_operator_is_locked_out_after_max_failures_even_with_the_right_password(operator, login):
    for _ in range(POLICY.max_failures):
        login("not the password")

    result = login()

    assert (result.ok, result.reason) == (False, "account locked; try again later")


def test_lockout_expires_after_the_lockout_period(operator, login):
    for _ in range(POLICY.max_failures):
        login("not the password")

    assert login(at=POLICY.lockout_minutes + 1).ok


def test_successful_login_resets_the_failure_count(session, operator, login):
    login("not the password")

    login()

    assert session.get(Operator, operator.id).failed_logins == 0


@pytest.fixture
def totp(session, operator, box, system_actor, now):
    """TOTP switched on for the operator; returns their authenticator app."""
    uri = authz.enable_totp(session, operator, actor=system_actor, now=now, box=box)
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    return pyotp.TOTP(secret)


def test_totp_is_required_once_enabled(totp, login):
    result = login()

    assert (result.ok, result.reason) == (False, "second factor required")


def test_login_with_password_and_current_totp_code_succeeds(totp, login, now):
    assert login(totp=totp.at(now)).ok


def test_wrong_totp_code_is_refused(totp, login, now):
    wrong = f"{(int(totp.at(now)) + 1) % 1_000_000:06d}"

    assert login(totp=wrong).reason == "invalid second factor"


def test_a_totp_code_cannot_be_used_twice(totp, login, now):
    code = totp.at(now)
    login(totp=code)

    assert login(totp=code).reason == "invalid second factor"


def test_totp_seed_is_stored_sealed(session, totp, operator):
    assert totp.secret not in session.get(Operator, operator.id).totp_secret_enc


def test_token_resolves_to_its_operator(session, operator, login, now):
    token = login().token

    assert authz.resolve_token(session, token, now=now).id == operator.id


def test_expired_token_is_refused(session, operator, login, now):
    token = login().token

    with pytest.raises(AuthenticationFailed):
        authz.resolve_token(session, token, now=now + timedelta(minutes=POLICY.token_ttl_minutes))


def test_revoked_token_is_refused(session, operator, login, now):
    token = login().token
    authz.revoke_token(session, token, now=now)

    with pytest.raises(AuthenticationFailed):
        authz.resolve_token(session, token, now=now)


def test_made_up_token_is_refused(session, operator, now):
    with pytest.raises(AuthenticationFailed):
        authz.resolve_token(session, "not-a-token", now=now)


def test_role_with_an_unknown_permission_is_refused(session, tenant, system_actor, now):
    with pytest.raises(ValidationFailed):
        authz.create_role(
            session, "night_shift", ["people.view", "people.teleport"], actor=system_actor, now=now
        )


def test_role_permissions_become_the_operators_permissions(
    session, tenant, make_operator, system_actor, now
):
    authz.create_role(session, "viewer", ["people.view"], actor=system_actor, now=now)

    actor = make_operator("victor", roles=("viewer",))[1]

    assert actor.permissions == frozenset({"people.view"})


# --- data scope ----------------------------------------------------------------------------


@pytest.fixture
def org(session, tenant, system_actor, now):
    """Org units: X (with child X1) and Y."""
    x = create_org_unit(session, "X", "Department X", actor=system_actor, now=now)
    x1 = create_org_unit(session, "X1", "Team X1", parent_id=x.id, actor=system_actor, now=now)
    y = create_org_unit(session, "Y", "Department Y", actor=system_actor, now=now)
    return {"X": x.id, "X1": x1.id, "Y": y.id}


@pytest.fixture
def people_by_unit(org, make_person):
    return {unit: make_person(org_unit_id=uid) for unit, uid in org.items()}


@pytest.fixture
def x_operator(make_operator, org):
    """An operator of department X (and everything below it)."""
    return make_operator("xavier", scope={"org_units": [org["X"]]})[1]


def test_operator_cannot_see_a_person_outside_their_org_unit(session, people_by_unit, x_operator):
    with pytest.raises(NotFound):
        get_person(session, people_by_unit["Y"].id, actor=x_operator)


def test_operator_sees_people_in_the_subtree_of_their_org_unit(session, people_by_unit, x_operator):
    assert (
        get_person(session, people_by_unit["X1"].id, actor=x_operator).id == people_by_unit["X1"].id
    )


def test_search_returns_only_the_operators_subtree(session, people_by_unit, x_operator):
    page = search_people(session, actor=x_operator)

    assert {p.id for p in page.items} == {people_by_unit["X"].id, people_by_unit["X1"].id}
    assert page.total == 2
