"""``onecard canteen ...``: re-run stored POS records, provision a POS's MAC key, show a
merchant's daily statement with its payout.

The commands reach the ``onecard`` command line through ``onecard_cli_commands``. Settings come
from the root context when ``onecard`` runs them (``ctx.obj.settings``), else from
``ONECARD_CONFIG`` / ``./config.toml`` / ``ONECARD_*`` variables. Domain errors end a command
with a one-line message (exit code 1); a reprocess that left a device failing exits with 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.config import ConfigError, Settings, load_settings
from onecard.modules.canteen import recordflow, terminalkeys
from onecard.modules.canteen.models import Merchant, Pos, Settlement
from onecard.modules.canteen.settlement import statement_json
from onecard.platform.actors import Actor
from onecard.platform.cards.keyring import Keyring
from onecard.platform.clock import utcnow
from onecard.platform.db.engine import make_engine, make_session_factory
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.errors import NotFound, OneCardError
from onecard.platform.tenants.services import get_tenant_by_slug

TENANT = click.option("--tenant", "slug", required=True, help="Tenant slug.")


def _settings(ctx: click.Context) -> Settings:
    found = getattr(ctx.find_root().obj, "settings", None)
    if isinstance(found, Settings):
        return found
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.UsageError(f"configuration: {exc}") from exc


@contextmanager
def _tenant_session(ctx: click.Context, slug: str) -> Iterator[tuple[Session, Actor]]:
    """A session in the tenant's scope and the command's actor; commits when the body ends."""
    settings = _settings(ctx)
    engine = make_engine(settings.database.url)
    try:
        with make_session_factory(engine)() as session:
            tenant = get_tenant_by_slug(session, slug)
            with tenant_scope(tenant.id):
                yield session, Actor.system("cli-canteen", tenant_id=tenant.id)
                session.commit()
    except OneCardError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        engine.dispose()


def _keyring(ctx: click.Context) -> Keyring:
    return Keyring.from_settings(_settings(ctx).keys)


@click.command("reprocess")
@TENANT
@click.option("--device", "device_id", default=None, help="Only this POS (device id).")
@click.pass_context
def reprocess_command(ctx: click.Context, slug: str, device_id: str | None) -> None:
    """Re-run stored POS records that have no sale yet (after a module failure)."""
    with _tenant_session(ctx, slug) as (session, actor):
        report = recordflow.reprocess(
            session, _keyring(ctx), actor=actor, now=utcnow(), device_id=device_id
        )
    click.echo(f"records {report.records}, sales recorded {report.recorded}")
    for device, why in sorted(report.failed.items()):
        click.echo(f"  device {device} failed: {why}")
    sys.exit(1 if report.failed else 0)


@click.command("pos-key")
@TENANT
@click.option("--device", "device_id", required=True, help="The POS's device id.")
@click.pass_context
def pos_key_command(ctx: click.Context, slug: str, device_id: str) -> None:
    """Print a POS's record MAC key wrapped under the transport key, for the provisioning
    device (JSON: ciphertext and check values, never a clear key)."""
    with _tenant_session(ctx, slug) as (session, actor):
        pos = _one(session, Pos, Pos.device_id == device_id, f"no POS with device {device_id}")
        service = _keyring(ctx).service(session, actor=actor, now=utcnow())
        wrapped = terminalkeys.provision_pos_key(session, service, pos, actor=actor, now=utcnow())
    out = {
        "device": device_id,
        "transport": {"version": wrapped.transport.version, "kcv": wrapped.transport_kcv.hex()},
        "keys": [
            {"name": k.name, "version": k.version, "algorithm": k.algorithm.value,
             "wrapped": k.ciphertext.hex(), "kcv": k.kcv.hex()}
            for k in wrapped.keys
        ],
    }  # fmt: skip
    click.echo(json.dumps(out, indent=2))


@click.command("statement")
@TENANT
@click.option("--merchant", "code", required=True, help="Merchant code.")
@click.option("--day", type=click.DateTime(formats=["%Y-%m-%d"]), required=True)
@click.pass_context
def statement_command(ctx: click.Context, slug: str, code: str, day: Any) -> None:
    """Print a merchant's statement of one business day, with its payout (JSON)."""
    business_day: date = day.date()
    with _tenant_session(ctx, slug) as (session, _actor):
        merchant = _one(session, Merchant, Merchant.code == code, f"no merchant {code}")
        statement = _one(
            session,
            Settlement,
            (Settlement.merchant_id == merchant.id) & (Settlement.business_day == business_day),
            f"no statement of {code} for {business_day.isoformat()}",
        )
        out = statement_json(statement)
    click.echo(json.dumps(out, indent=2, ensure_ascii=False))


def _one(session: Session, model: type[Any], where: Any, missing: str) -> Any:
    found = session.scalar(select(model).where(where))
    if found is None:
        raise NotFound(missing)
    return found


COMMANDS: tuple[Callable[..., Any], ...] = (reprocess_command, pos_key_command, statement_command)
