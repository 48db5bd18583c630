"""The ``onecard`` command line (click): database, tenants, operators, demo, server, checks.

Exit codes follow the usual convention: 0 success, 1 a check found problems, 2 usage or
configuration errors.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any

import click

from onecard.config import ConfigError, Settings, load_settings
from onecard.platform.actors import Actor
from onecard.platform.clock import utcnow
from onecard.platform.db.engine import make_engine, make_session_factory
from onecard.platform.db.migrate import upgrade
from onecard.platform.db.tenancy import tenant_scope, unscoped
from onecard.platform.errors import OneCardError
from onecard.platform.tenants.models import Tenant


class Context:
    """Lazily built settings and database handles shared by subcommands."""

    def __init__(self, config: str | None) -> None:
        self.config_path = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """Settings, loaded once; configuration errors end the command with exit code 2."""
        if self._settings is None:
            try:
                self._settings = load_settings(self.config_path)
            except ConfigError as exc:
                raise click.UsageError(f"configuration: {exc}") from exc
        return self._settings

    def sessions(self) -> Any:
        """A session factory on the configured database."""
        return make_session_factory(make_engine(self.settings.database.url))


pass_ctx = click.make_pass_decorator(Context)


class _Group(click.Group):
    """Turns expected domain errors into a one-line usage error (exit code 2), not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OneCardError as exc:
            raise click.UsageError(exc.message, ctx) from None


@click.group(cls=_Group)
@click.option(
    "--config",
    "config",
    envvar="ONECARD_CONFIG",
    type=click.Path(dir_okay=False),
    help="TOML configuration file (default: ./config.toml).",
)
@click.version_option(package_name="onecard")
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """OneCard (一卡通) platform administration."""
    ctx.obj = Context(config)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(ctx: Context) -> None:
    """Apply all migrations."""
    upgrade(make_engine(ctx.settings.database.url))
    click.echo("database is at the latest revision")


@main.group()
def tenant() -> None:
    """Tenants."""


@tenant.command("create")
@click.argument("slug")
@click.option("--name", required=True)
@pass_ctx
def tenant_create(ctx: Context, slug: str, name: str) -> None:
    """Create a tenant with its accounts and default roles."""
    from onecard.platform.tenants.services import create_tenant

    with ctx.sessions()() as session:
        t = create_tenant(session, slug, name, actor=Actor.system("cli"), now=utcnow())
        session.commit()
        click.echo(f"created tenant {t.slug} (id {t.id})")


@main.group()
def operator() -> None:
    """Operators."""


@operator.command("create")
@click.option("--tenant", "slug", required=True, help="Tenant slug (_platform for admins).")
@click.option("--username", required=True)
@click.option("--role", "roles", multiple=True, help="Role name; repeatable.")
@click.option("--platform-admin", is_flag=True, help="Create a platform administrator.")
@click.password_option(envvar="ONECARD_OPERATOR_PASSWORD")
@pass_ctx
def operator_create(
    ctx: Context,
    slug: str,
    username: str,
    roles: tuple[str, ...],
    platform_admin: bool,
    password: str,
) -> None:
    """Create an operator (the password is asked for, or taken from ONECARD_OPERATOR_PASSWORD)."""
    from onecard.platform.authz.services import create_operator
    from onecard.platform.tenants.services import ensure_platform_tenant, get_tenant_by_slug
    from onecard.web import policy_from

    now = utcnow()
    with ctx.sessions()() as session:
        t = (
            ensure_platform_tenant(session, now=now)
            if platform_admin
            else get_tenant_by_slug(session, slug)
        )
        with tenant_scope(t.id):
            op = create_operator(
                session,
                username,
                password,
                actor=Actor.system("cli"),
                now=now,
                policy=policy_from(ctx.settings),
                roles=list(roles),
                is_platform_admin=platform_admin,
            )
        session.commit()
        click.echo(f"created operator {op.username} in {t.slug}")


@main.command("seed-demo")
@pass_ctx
def seed_demo_cmd(ctx: Context) -> None:
    """Create the demo tenant (idempotent) and print its login."""
    login = _seed(ctx.settings)
    _print_login(ctx.settings, login)


def _seed(settings: Settings) -> Any:
    from onecard.platform.demo import seed_demo
    from onecard.web import policy_from

    engine = make_engine(settings.database.url)
    upgrade(engine)
    password = settings.demo.password or _demo_password(settings)
    with make_session_factory(engine)() as session:
        login = seed_demo(
            session,
            settings.demo.tenant,
            settings.demo.username,
            password,
            people=settings.demo.people,
            now=utcnow(),
            policy=policy_from(settings),
        )
        session.commit()
    return login


def _demo_password(settings: Settings) -> str:
    """The generated demo password, kept beside the database so restarts print the same one."""
    url = settings.database.url
    folder = Path(url.split("///", 1)[1]).parent if url.startswith("sqlite:///") else Path("var")
    path = folder / "demo-password.txt"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    folder.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(password)
    return password


def _print_login(settings: Settings, login: Any) -> None:
    url = f"http://{settings.web.host}:{settings.web.port}"
    click.echo("")
    click.echo(
        f"  OneCard console: {url}/console   API: {url}/api/v1   ({url}/api/v1/openapi.json)"
    )
    click.echo(
        f"  Demo login -> tenant: {login.tenant}   username: {login.username}   "
        f"password: {login.password}"
    )
    click.echo("")


@main.command()
@click.option("--host", default=None, help="Listen address (default from config).")
@click.option("--port", default=None, type=int, help="Listen port (default from config).")
@click.option("--threads", default=16, show_default=True)
@pass_ctx
def serve(ctx: Context, host: str | None, port: int | None, threads: int) -> None:
    """Serve the web app (console, API) with waitress."""
    _serve(ctx.settings, host, port, threads)


def _serve(settings: Settings, host: str | None, port: int | None, threads: int) -> None:
    """Serve the app and its Socket.IO endpoint (live monitor).

    Flask-SocketIO's threading mode with simple-websocket needs a server that hands the raw
    socket over for WebSocket: Werkzeug's threaded server does (waitress does not), so it runs
    through ``socketio.run``. ``threads`` is kept for the command line; Werkzeug starts a thread
    per connection. Production: gunicorn ``-w 1 --threads N`` (gthread) on the same app.
    """
    from onecard.web import create_app
    from onecard.web.live import socketio_of
    from onecard.web.logs import configure_logging

    del threads
    configure_logging(settings.logging.level, settings.logging.json)
    app = create_app(settings)
    socketio_of(app).run(
        app,
        host=host or settings.web.host,
        port=port or settings.web.port,
        allow_unsafe_werkzeug=True,
        log_output=False,
    )


@main.command()
@pass_ctx
def run(ctx: Context) -> None:
    """Start the platform on the configured (embedded) default: migrate, seed the demo, serve."""
    from onecard import embedded
    from onecard.web.logs import configure_logging

    settings = ctx.settings
    configure_logging(settings.logging.level, settings.logging.json)
    click.echo(f"database: {settings.redacted()['database']['url']}")
    login = _seed(settings) if settings.demo.seed else None
    running = embedded.start(
        settings, make_session_factory(make_engine(settings.database.url)), fleet=settings.demo.seed
    )
    click.echo(
        f"MQTT broker: {settings.mqtt.host}:{settings.mqtt.port}"
        f"{' (embedded)' if settings.mqtt.embedded else ''}"
    )
    if login is not None:
        _print_login(settings, login)
    try:
        _serve(settings, None, None, 16)
    finally:
        running.stop()


@main.group()
def ledger() -> None:
    """Ledger checks."""


@ledger.command("verify")
@click.option("--tenant", "slug", default=None, help="Only this tenant (default: all).")
@pass_ctx
def ledger_verify(ctx: Context, slug: str | None) -> None:
    """Recompute every balance from the journal; exit 1 on any problem."""
    from onecard.platform.ledger.reconcile import verify

    bad = 0
    with ctx.sessions()() as session:
        for t in _tenants(session, slug):
            with tenant_scope(t.id):
                report = verify(session)
            click.echo(
                f"{t.slug}: {report.entries} entries, {report.lines} lines, "
                f"trial balance {report.trial_balance_fen} - "
                f"{'ok' if report.ok else 'PROBLEMS'}"
            )
            for problem in report.problems:
                click.echo(f"  {problem}")
            bad += not report.ok
    sys.exit(1 if bad else 0)


def _tenants(session: Any, slug: str | None) -> list[Tenant]:
    from sqlalchemy import select

    with unscoped(reason="CLI checks every tenant"):
        stmt = select(Tenant).order_by(Tenant.id)
        if slug:
            stmt = stmt.where(Tenant.slug == slug)
        found = list(session.scalars(stmt))
    if slug and not found:
        raise click.UsageError(f"no tenant {slug}")
    return found


@main.group()
def audit() -> None:
    """Audit trail checks."""


@audit.command("verify")
@click.option("--tenant", "slug", default=None, help="Only this tenant (default: all).")
@pass_ctx
def audit_verify(ctx: Context, slug: str | None) -> None:
    """Recompute the hash chains; exit 1 and name the first altered row."""
    from onecard.platform.audit.record import verify_chain

    bad = 0
    with ctx.sessions()() as session:
        for t in _tenants(session, slug):
            with tenant_scope(t.id):
                report = verify_chain(session)
            if report.first_bad is None:
                click.echo(f"{t.slug}: {report.events} events - chain intact")
                continue
            bad += 1
            row = report.first_bad
            click.echo(
                f"{t.slug}: first bad row id={row.id} seq={row.seq} type={row.type}: "
                f"{report.problem}"
            )
    sys.exit(1 if bad else 0)


@main.group()
def people() -> None:
    """People."""


@people.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tenant", "slug", required=True)
@click.option("--skip-bad-rows", is_flag=True, help="Import the good rows of a file with errors.")
@click.option("--dry-run", is_flag=True, help="Validate only.")
@pass_ctx
def people_import(ctx: Context, file: Path, slug: str, skip_bad_rows: bool, dry_run: bool) -> None:
    """Import people from a CSV or XLSX FILE, with a progress bar and a per-row error report."""
    from onecard.platform.people.importer import import_people, read_rows
    from onecard.platform.tenants.services import get_tenant_by_slug

    with ctx.sessions()() as session:
        t = get_tenant_by_slug(session, slug)
        with tenant_scope(t.id), click.progressbar(length=1, label="importing") as bar:

            def progress(done: int, total: int) -> None:
                bar.length = total
                bar.update(done - bar.pos)

            report = import_people(
                session,
                read_rows(file.read_bytes(), file.name),
                actor=Actor.system("cli-import", tenant_id=t.id),
                now=utcnow(),
                skip_bad_rows=skip_bad_rows,
                dry_run=dry_run,
                progress=progress,
            )
            if report.errors and not skip_bad_rows:
                session.rollback()
            else:
                session.commit()
    click.echo(
        f"rows {report.rows}, imported {report.imported}, skipped {report.skipped}, "
        f"errors {len(report.errors)}"
    )
    for err in report.errors[:50]:
        click.echo(f"  row {err.row} {err.field}: {err.message}")
    sys.exit(1 if report.errors and not skip_bad_rows else 0)


def _mount_groups() -> None:
    """Attach the command groups of the key service, emulators and device agents."""
    from onecard.device_agents.agent_cli import agent_command, sim_command
    from onecard.device_agents.card_cli import card, psam
    from onecard.keys.cli import keys
    from onecard.platform.devices.cli import bridge_command, devices

    for group in (keys, card, psam, agent_command, sim_command, devices, bridge_command):
        main.add_command(group)


def _mount_module_commands() -> None:
    """Attach each installed module's ``onecard_cli_commands`` as ``onecard <module> ...``.

    A module that fails to load costs only its own commands (with a warning on stderr): the
    platform's commands, ``db upgrade`` among them, must keep working to repair things."""
    from onecard.platform.errors import OneCardError
    from onecard.platform.registry import Registry

    try:
        registry = Registry.load()
    except (OneCardError, ImportError) as exc:
        click.echo(f"onecard: module commands unavailable: {exc}", err=True)
        return
    for impl in registry.pm.hook.onecard_cli_commands.get_hookimpls():
        made: Any = impl.function()
        commands = [c for c in made or () if isinstance(c, click.Command)]
        if not commands or impl.plugin_name in main.commands:
            continue
        group = click.Group(impl.plugin_name, help=f"Commands of the {impl.plugin_name} module.")
        for command in commands:
            group.add_command(command)
        main.add_command(group)


_mount_groups()
_mount_module_commands()
