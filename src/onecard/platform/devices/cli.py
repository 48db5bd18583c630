"""``onecard devices ...`` (and the ``bridge`` command): register devices, broker config, bridge.

The lead mounts :data:`devices` under ``onecard`` and :data:`bridge_command` as ``onecard
bridge``. Settings come from the parent's context object when there is one (``ctx.obj.settings``)
or from ``--config``/``ONECARD_CONFIG`` (``python -m onecard.platform.devices.cli``).
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from onecard.config import ConfigError, Settings, load_settings
from onecard.platform.actors import Actor
from onecard.platform.clock import utcnow
from onecard.platform.db.engine import make_engine, make_session_factory
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices import services
from onecard.platform.devices.broker import Listener, Tls, write_config
from onecard.platform.devices.runtime import connection, run_bridge_forever


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.find_root().obj
    found = getattr(obj, "settings", None)
    if isinstance(found, Settings):
        return found
    try:
        return load_settings(ctx.meta.get("onecard.devices.config"))
    except ConfigError as exc:
        raise click.UsageError(f"configuration: {exc}") from exc


def _sessions(settings: Settings) -> Any:
    return make_session_factory(make_engine(settings.database.url))


@click.group()
@click.option("--config", type=click.Path(dir_okay=False), default=None, help="TOML config file.")
@click.pass_context
def devices(ctx: click.Context, config: str | None) -> None:
    """Terminal devices: registry, credentials, broker configuration, bridge."""
    if config:
        ctx.meta["onecard.devices.config"] = config


@devices.command("add")
@click.option("--kind", required=True)
@click.option("--id", "device_id", required=True)
@click.option("--tenant", "slug", default=None, help="Tenant slug (default: the demo tenant).")
@click.option("--site", "site_code", default=None, help="Site code.")
@click.option("--name", default="")
@click.pass_context
def add(
    ctx: click.Context,
    kind: str,
    device_id: str,
    slug: str | None,
    site_code: str | None,
    name: str,
) -> None:
    """Register a device and print its broker host, port, username and password."""
    from sqlalchemy import select

    from onecard.platform.tenants.models import Site
    from onecard.platform.tenants.services import get_tenant_by_slug

    settings = _settings(ctx)
    with _sessions(settings)() as session:
        tenant = get_tenant_by_slug(session, slug or settings.demo.tenant)
        with tenant_scope(tenant.id):
            site_id = None
            if site_code:
                site_id = session.scalar(select(Site.id).where(Site.code == site_code))
                if site_id is None:
                    raise click.UsageError(f"no site {site_code} in {tenant.slug}")
            spec = services.NewDevice(device_id, kind, site_id=site_id, name=name)
            _dev, password = services.add_device(
                session, spec, actor=Actor.system("cli", tenant_id=tenant.id), now=utcnow()
            )
            session.commit()
    _print_credentials(settings, device_id, password)


def _print_credentials(settings: Settings, device_id: str, password: str) -> None:
    click.echo(f"broker host: {settings.mqtt.host}")
    click.echo(f"broker port: {settings.mqtt.port}")
    click.echo(f"username:    {device_id}")
    click.echo(f"password:    {password}")


@devices.command("rotate-credentials")
@click.argument("device_id")
@click.option("--tenant", "slug", default=None)
@click.pass_context
def rotate(ctx: click.Context, device_id: str, slug: str | None) -> None:
    """Issue a new password for DEVICE_ID (reload or regenerate the broker config after)."""
    from onecard.platform.tenants.services import get_tenant_by_slug

    settings = _settings(ctx)
    with _sessions(settings)() as session:
        tenant = get_tenant_by_slug(session, slug or settings.demo.tenant)
        with tenant_scope(tenant.id):
            device = services.get_device(session, device_id)
            password = services.rotate_credentials(
                session, device, actor=Actor.system("cli", tenant_id=tenant.id), now=utcnow()
            )
            session.commit()
    _print_credentials(settings, device_id, password)


@devices.command("broker-config")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="0.0.0.0", show_default=True)  # noqa: S104 - a broker listens
@click.option("--port", default=8883, show_default=True)
@click.option("--cafile", default=None, help="TLS: CA certificate (PEM).")
@click.option("--certfile", default=None, help="TLS: server certificate (PEM).")
@click.option("--keyfile", default=None, help="TLS: server key (PEM).")
@click.option("--persistence", default="/var/lib/mosquitto", show_default=True)
@click.pass_context
def broker_config(
    ctx: click.Context,
    out: Path,
    host: str,
    port: int,
    cafile: str | None,
    certfile: str | None,
    keyfile: str | None,
    persistence: str,
) -> None:
    """Write a production mosquitto.conf, password file and ACL into OUT."""
    settings = _settings(ctx)
    tls = None
    if cafile or certfile or keyfile:
        if not (cafile and certfile and keyfile):
            raise click.UsageError("TLS needs --cafile, --certfile and --keyfile")
        tls = Tls(cafile, certfile, keyfile)
    else:
        click.echo("warning: no TLS files given; the listener is plain TCP", err=True)
    password = settings.mqtt.password or connection(settings).password
    with _sessions(settings)() as session:
        creds = services.all_credentials(session)
    files = write_config(
        out,
        [Listener(port, host, tls)],
        creds,
        platform_user=settings.mqtt.username or "onecard-bridge",
        platform_password=password,
        data_dir=Path(persistence),
    )
    click.echo(f"wrote {files.conf}, {files.passwd} ({len(creds)} devices), {files.acl}")


@click.command("bridge")
@click.option("--tls-ca", default=None, help="CA file to verify the broker's TLS certificate.")
@click.option("--client-id", default="", help="MQTT client id (stable per bridge process).")
@click.option("--share-group", default="bridge", show_default=True, help="$share group name.")
@click.pass_context
def bridge_command(
    ctx: click.Context, tls_ca: str | None, client_id: str, share_group: str
) -> None:
    """Run the MQTT bridge in the foreground until SIGTERM/SIGINT."""
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    settings = _settings(ctx)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from onecard.platform.registry import Registry

    run_bridge_forever(
        settings,
        stop,
        tls_ca=tls_ca,
        client_id=client_id,
        share_group=share_group,
        registry=Registry.load(),
    )


devices.add_command(bridge_command)


if __name__ == "__main__":
    devices()
