"""The ``onecard`` command line against a fresh SQLite database, and ``load_settings``."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard.cli import main
from onecard.config import ConfigError, load_settings
from onecard.platform.actors import Actor
from onecard.platform.cards.models import Card
from onecard.platform.db.engine import make_engine, make_session_factory
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.ledger.models import Account, Balance
from onecard.platform.ledger.reconcile import verify
from onecard.platform.people.models import Person
from onecard.platform.people.services import search_people
from onecard.platform.tenants.models import OrgUnit, Site
from onecard.platform.tenants.services import get_tenant_by_slug

SECRET = "cli-secret-key-d41d8cd98f00b204e980"
HEADER = "person_no,name,identity_class\n"

Run = Callable[..., Result]


@pytest.fixture
def db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where this test's database lives; the working directory has no ``config.toml``."""
    monkeypatch.chdir(tmp_path)
    return tmp_path / "x.db"


@pytest.fixture
def env(db_path: Path) -> dict[str, str | None]:
    """The environment of every command: the database, a secret, a small demo."""
    return {
        "ONECARD_DATABASE__URL": f"sqlite:///{db_path}",
        "ONECARD_SECURITY__SECRET_KEY": SECRET,
        "ONECARD_DEMO__PEOPLE": "20",
        "ONECARD_OPERATOR_PASSWORD": "operator-password-1",
        "ONECARD_CONFIG": None,
    }


@pytest.fixture
def outputs() -> list[str]:
    """Everything the commands of one test printed (for the secret check)."""
    return []


@pytest.fixture
def onecard(env: dict[str, str | None], outputs: list[str]) -> Run:
    """``onecard(*args, **env_overrides)`` runs the CLI in-process and returns the result."""

    def _run(*args: str, **overrides: str | None) -> Result:
        result = CliRunner().invoke(main, list(args), env={**env, **overrides})
        outputs.append(result.output)
        return result

    return _run


@pytest.fixture
def migrated(onecard: Run) -> None:
    """The database is at the latest revision."""
    assert onecard("db", "upgrade").exit_code == 0


@pytest.fixture
def acme(onecard: Run, migrated: None) -> str:
    """Tenant ``acme`` exists."""
    result = onecard("tenant", "create", "acme", "--name", "Acme 公司")
    assert result.exit_code == 0, result.output
    return "acme"


@pytest.fixture
def demo(onecard: Run) -> Result:
    """``seed-demo`` has run once."""
    result = onecard("seed-demo")
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def database(db_path: Path) -> Iterator[Session]:
    """A session on the CLI's database, for checking what the commands did."""
    engine = make_engine(f"sqlite:///{db_path}")
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


def _count(session: Session, tenant: str, model: Any) -> int:
    with tenant_scope(get_tenant_by_slug(session, tenant).id):
        return session.scalar(select(func.count()).select_from(model)) or 0


def _login_line(result: Result) -> str:
    return next(line for line in result.output.splitlines() if "Demo login" in line)


# --- database, tenants, operators -------------------------------------------------------------


def test_db_upgrade_migrates_a_fresh_database(onecard: Run, db_path: Path) -> None:
    result = onecard("db", "upgrade")
    assert (result.exit_code, result.output) == (0, "database is at the latest revision\n")
    assert db_path.exists()


def test_db_upgrade_twice_is_harmless(onecard: Run, migrated: None) -> None:
    assert onecard("db", "upgrade").exit_code == 0


def test_tenant_create_opens_the_tenant_with_accounts(
    onecard: Run, acme: str, database: Session
) -> None:
    assert _count(database, acme, Account) == 6  # cash desk, bank, subsidy, float, equity, AR


def test_operator_create_takes_the_password_from_the_environment(
    onecard: Run, acme: str, db_path: Path, env: dict[str, Any]
) -> None:
    result = onecard(
        "operator", "create", "--tenant", acme, "--username", "alice", "--role", "tenant_admin"
    )
    assert (result.exit_code, result.output) == (0, "created operator alice in acme\n")
    from onecard.web import create_app

    settings = load_settings(environ={k: v for k, v in env.items() if v is not None})
    engine = make_engine(settings.database.url)
    client = create_app(settings, engine=engine).test_client()
    resp = client.post(
        "/api/v1/auth/login",
        json={"tenant": acme, "username": "alice", "password": "operator-password-1"},
    )
    engine.dispose()
    assert resp.status_code == 200


# --- seed-demo --------------------------------------------------------------------------------


def test_seed_demo_prints_the_login(demo: Result) -> None:
    line = _login_line(demo)
    assert "tenant: demo" in line
    assert "username: admin" in line
    assert len(line.split("password: ")[1].strip()) >= 12


def test_seed_demo_twice_prints_the_same_password(onecard: Run, demo: Result) -> None:
    again = onecard("seed-demo")
    assert again.exit_code == 0
    assert _login_line(again) == _login_line(demo)


@pytest.mark.usefixtures("demo")
def test_demo_tenant_has_sites_units_people_cards_and_balances(database: Session) -> None:
    tenant = get_tenant_by_slug(database, "demo")
    with tenant_scope(tenant.id):
        counts = [
            database.scalar(select(func.count()).select_from(m))
            for m in (Site, OrgUnit, Person, Card)
        ]
        assert counts == [2, 4, 20, 20]
        page = search_people(database, actor=Actor.system("tests"), q="S2026", limit=200)
        assert page.total == 16  # every fifth person is staff (T...), the rest students
        purses = database.scalars(
            select(Balance.raw_fen)
            .join(Account, Account.id == Balance.account_id)
            .where(Account.kind == "holder.purse")
        ).all()
        assert len(purses) == 20
        assert all(raw < 0 for raw in purses)  # liabilities: a positive balance is a credit
        assert verify(database).ok


# --- ledger and audit verification ------------------------------------------------------------


@pytest.mark.usefixtures("demo")
def test_ledger_verify_exits_0_on_a_consistent_journal(onecard: Run) -> None:
    result = onecard("ledger", "verify")
    assert result.exit_code == 0, result.output
    assert "demo:" in result.output
    assert "- ok" in result.output


@pytest.mark.usefixtures("demo")
def test_audit_verify_exits_0_on_an_intact_chain(onecard: Run) -> None:
    result = onecard("audit", "verify", "--tenant", "demo")
    assert result.exit_code == 0, result.output
    assert "chain intact" in result.output


@pytest.mark.usefixtures("demo")
def test_audit_verify_names_the_tampered_row(onecard: Run, db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        (row_id,) = conn.execute(
            "SELECT e.id FROM audit_events e JOIN tenants t ON t.id = e.tenant_id "
            "WHERE t.slug = 'demo' ORDER BY e.seq LIMIT 1 OFFSET 9"
        ).fetchone()
        conn.execute("UPDATE audit_events SET data = ? WHERE id = ?", ('{"amount_fen": 1}', row_id))
    result = onecard("audit", "verify")
    assert result.exit_code == 1
    assert f"first bad row id={row_id} " in result.output
    assert "altered" in result.output


def test_unknown_tenant_is_a_usage_error(onecard: Run, migrated: None) -> None:
    result = onecard("ledger", "verify", "--tenant", "nosuch")
    assert result.exit_code == 2
    assert "no tenant nosuch" in result.output


# --- people import ----------------------------------------------------------------------------


def test_people_import_shows_progress_and_imports(
    onecard: Run, acme: str, tmp_path: Path, database: Session
) -> None:
    path = tmp_path / "people.csv"
    path.write_text(HEADER + "A1,甲,staff\nA2,乙,student\nA3,丙,visitor\n", encoding="utf-8")
    result = onecard("people", "import", str(path), "--tenant", acme)
    assert result.exit_code == 0, result.output
    assert "importing" in result.output
    assert "rows 3, imported 3, skipped 0, errors 0" in result.output
    assert _count(database, acme, Person) == 3


def test_people_import_of_a_bad_file_exits_1_and_imports_nothing(
    onecard: Run, acme: str, tmp_path: Path, database: Session
) -> None:
    path = tmp_path / "people.csv"
    path.write_text(HEADER + "B1,甲,staff\nB2,,staff\nB1,丙,staff\n", encoding="utf-8")
    result = onecard("people", "import", str(path), "--tenant", acme)
    assert result.exit_code == 1
    assert "row 2 name:" in result.output
    assert "row 3 person_no: person number already exists" in result.output
    assert _count(database, acme, Person) == 0


def test_people_import_skipping_bad_rows_imports_the_good_ones(
    onecard: Run, acme: str, tmp_path: Path, database: Session
) -> None:
    path = tmp_path / "people.csv"
    path.write_text(HEADER + "C1,甲,staff\nC2,,staff\n", encoding="utf-8")
    result = onecard("people", "import", str(path), "--tenant", acme, "--skip-bad-rows")
    assert result.exit_code == 0
    assert "imported 1, skipped 1, errors 1" in result.output
    assert _count(database, acme, Person) == 1


# --- configuration errors and secrets ---------------------------------------------------------


def test_non_numeric_port_exits_2_naming_the_key(onecard: Run) -> None:
    result = onecard("db", "upgrade", ONECARD_WEB__PORT="abc")
    assert result.exit_code == 2
    assert "web.port" in result.output


def test_unknown_section_in_the_config_file_is_named(onecard: Run, tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text('[databse]\nurl = "sqlite:///x.db"\n', encoding="utf-8")
    result = onecard("--config", str(config), "db", "upgrade")
    assert result.exit_code == 2
    assert "databse: unknown section" in result.output


def test_missing_config_file_is_a_usage_error(onecard: Run, tmp_path: Path) -> None:
    result = onecard("db", "upgrade", ONECARD_CONFIG=str(tmp_path / "absent.toml"))
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_invalid_tenant_slug_is_a_usage_error(onecard: Run, migrated: None) -> None:
    result = onecard("tenant", "create", "Bad Slug", "--name", "x")
    assert result.exit_code == 2
    assert "slug" in result.output


def test_secret_key_never_appears_in_any_output(
    onecard: Run, acme: str, tmp_path: Path, outputs: list[str]
) -> None:
    path = tmp_path / "people.csv"
    path.write_text(HEADER + "D1,甲,staff\nD2,,staff\n", encoding="utf-8")
    onecard("operator", "create", "--tenant", acme, "--username", "bob")
    onecard("seed-demo")
    onecard("ledger", "verify")
    onecard("audit", "verify")
    onecard("people", "import", str(path), "--tenant", acme)
    onecard("db", "upgrade", ONECARD_WEB__PORT="abc")
    onecard("db", "upgrade", ONECARD_SECURITY__LOGIN_MAX_FAILURES="many")
    onecard("db", "upgrade", ONECARD_SECURITY__SECRET_KEYS=SECRET)
    onecard("--help")
    assert len(outputs) >= 10
    assert all(SECRET not in text for text in outputs)


# --- load_settings ----------------------------------------------------------------------------


@pytest.fixture
def no_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory without ``config.toml``."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.usefixtures("no_config_file")
def test_defaults_without_file_or_environment() -> None:
    settings = load_settings(environ={})
    assert (settings.web.port, settings.database.url, settings.demo.people) == (
        8000,
        "sqlite:///var/onecard.db",
        200,
    )


@pytest.mark.usefixtures("no_config_file")
@pytest.mark.parametrize(
    ("name", "text", "section", "key", "value"),
    [
        ("ONECARD_WEB__PORT", "9000", "web", "port", 9000),
        ("ONECARD_DATABASE__ECHO", "yes", "database", "echo", True),
        ("ONECARD_LOGGING__JSON", "off", "logging", "json", False),
        ("ONECARD_DEMO__TENANT", "showcase", "demo", "tenant", "showcase"),
        ("onecard_web__host", "0.0.0.0", "web", "host", "0.0.0.0"),  # noqa: S104
    ],
)
def test_environment_values_are_converted_to_the_fields_type(
    name: str, text: str, section: str, key: str, value: Any
) -> None:
    settings = load_settings(environ={name.upper(): text})
    assert getattr(getattr(settings, section), key) == value


def test_environment_overrides_the_file(no_config_file: Path) -> None:
    path = no_config_file / "c.toml"
    path.write_text("[web]\nport = 8100\nhost = '10.0.0.1'\n", encoding="utf-8")
    settings = load_settings(path, environ={"ONECARD_WEB__PORT": "9100"})
    assert (settings.web.port, settings.web.host) == (9100, "10.0.0.1")


def test_config_path_comes_from_onecard_config(no_config_file: Path) -> None:
    path = no_config_file / "c.toml"
    path.write_text("[demo]\npeople = 7\n", encoding="utf-8")
    assert load_settings(environ={"ONECARD_CONFIG": str(path)}).demo.people == 7


@pytest.mark.usefixtures("no_config_file")
@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"ONECARD_WEB__PORT": "abc"}, "web.port"),
        ({"ONECARD_WEB__PORT": "70000"}, "web.port"),
        ({"ONECARD_DATABASE__ECHO": "maybe"}, "database.echo"),
        ({"ONECARD_WEB__COLOUR": "red"}, "web.colour"),
        ({"ONECARD_NOSUCH__KEY": "1"}, "nosuch"),
        ({"ONECARD_DATABASE__URL": "mysql://x"}, "database.url"),
        ({"ONECARD_LOGGING__LEVEL": "LOUD"}, "logging.level"),
        ({"ONECARD_SECURITY__LOGIN_MAX_FAILURES": "0"}, "security.login_max_failures"),
    ],
)
def test_bad_environment_value_names_the_key(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{named}\b"):
        load_settings(environ=environ)


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[web]\nport = 'abc'\n", "web.port"),
        ("[web]\nport = true\n", "web.port"),
        ("[web]\ncolour = 'red'\n", "web.colour"),
        ("[nosuch]\nkey = 1\n", "nosuch"),
        ("web = 1\n", "web"),
        ("[web\n", "not valid TOML"),
    ],
)
def test_bad_config_file_names_the_key(no_config_file: Path, toml: str, named: str) -> None:
    path = no_config_file / "c.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=named):
        load_settings(path, environ={})


@pytest.mark.usefixtures("no_config_file")
def test_redacted_masks_every_secret_and_keeps_the_rest() -> None:
    settings = load_settings(
        environ={
            "ONECARD_SECURITY__SECRET_KEY": SECRET,
            "ONECARD_MQTT__PASSWORD": "broker-pass",
            "ONECARD_DEMO__PASSWORD": "demo-pass",
            "ONECARD_DATABASE__URL": "postgresql+psycopg://onecard:db-pass@db:5432/onecard",
        }
    )
    shown = settings.redacted()
    assert (shown["security"]["secret_key"], shown["mqtt"]["password"]) == ("***", "***")
    assert shown["demo"]["password"] == "***"
    assert shown["database"]["url"] == "postgresql+psycopg://onecard:***@db:5432/onecard"
    assert (shown["web"]["port"], shown["mqtt"]["username"]) == (8000, "")
    text = repr(settings) + repr(shown)
    assert all(s not in text for s in (SECRET, "broker-pass", "demo-pass"))


@pytest.mark.usefixtures("no_config_file")
def test_settings_repr_hides_the_database_password() -> None:
    url = "postgresql+psycopg://onecard:db-pass@db:5432/onecard"
    assert "db-pass" not in repr(load_settings(environ={"ONECARD_DATABASE__URL": url}))


@pytest.mark.usefixtures("no_config_file")
def test_redacted_leaves_an_empty_secret_empty() -> None:
    assert load_settings(environ={}).redacted()["security"]["secret_key"] == ""


def test_module_commands_are_mounted_under_the_module_key() -> None:
    result = CliRunner().invoke(main, ["canteen", "--help"])
    assert result.exit_code == 0, result.output
    for command in ("reprocess", "pos-key", "statement"):
        assert command in result.output
    missing = CliRunner().invoke(main, ["canteen", "reprocess"])
    assert missing.exit_code == 2
    assert "--tenant" in missing.output
