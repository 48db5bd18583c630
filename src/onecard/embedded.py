"""The embedded default that ``make run`` starts: one process with everything in it.

Migrates the SQLite database, seeds the demo tenant, starts the private MQTT broker and the
bridge, sets the demo tenant's canteen up with simulated POS terminals, starts a simulated
fleet that sells meals with the demo cards, and serves the console and API. It sits above
``platform``, ``modules`` and ``device_agents`` and is the only place that wires them together.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onecard.config import Settings
from onecard.platform.actors import Actor
from onecard.platform.clock import utcnow
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.devices.models import Device
from onecard.platform.devices.runtime import DeviceServices, data_folder, start_device_services
from onecard.platform.devices.services import NewDevice, add_device, rotate_credentials
from onecard.platform.registry import Registry
from onecard.platform.tenants.models import Site, Tenant
from onecard.platform.tenants.services import enabled_module_keys, set_module_enabled

log = logging.getLogger(__name__)
DEMO_POS = 6
MEALS = (
    ("breakfast", time(6), time(10)),
    ("lunch", time(10), time(15)),
    ("dinner", time(15), time(21)),
    ("supper", time(21), time(6)),
)


@dataclass
class Embedded:
    """What ``onecard run`` started besides the web server; :meth:`stop` ends it all."""

    devices: DeviceServices
    fleet: Any = None

    def stop(self) -> None:
        """Stop the fleet, then the bridge and the broker."""
        if self.fleet is not None:
            self.fleet.stop()
        self.devices.stop()


def start(settings: Settings, sessions: sessionmaker[Session], *, fleet: bool = True) -> Embedded:
    """Start the broker, bridge and (for the demo tenant) the simulated POS fleet."""
    registry = Registry.load()
    credentials = _demo_pos(settings, sessions, registry)
    services = start_device_services(settings, registry=registry)  # the bridge's own engine
    running = Embedded(services)
    if fleet and credentials:
        running.fleet = _start_fleet(settings, credentials)
    return running


def _demo_pos(
    settings: Settings, sessions: sessionmaker[Session], registry: Registry
) -> dict[str, tuple[str, str, Any]]:
    """Register the demo tenant's POS terminals and canteen (once); return their credentials."""
    store = data_folder(settings) / "mqtt" / "demo-devices.json"
    with sessions() as session:
        tenant = session.scalar(select(Tenant).where(Tenant.slug == settings.demo.tenant))
        if tenant is None or "canteen" not in registry.modules:
            return {}
        with tenant_scope(tenant.id):
            creds = _ensure_devices(session, tenant, store, utcnow())
            session.commit()
    return {dev: (dev, pw, None) for dev, pw in creds.items()}


def _ensure_devices(session: Session, tenant: Tenant, store: Path, now: datetime) -> dict[str, str]:
    actor = Actor.system("embedded-demo", tenant_id=tenant.id)
    known = json.loads(store.read_text(encoding="utf-8")) if store.exists() else {}
    if "canteen" not in enabled_module_keys(session):
        set_module_enabled(session, "canteen", True, actor=actor, now=now)
        _canteen_setup(session, actor, now)
    creds: dict[str, str] = {}
    for n in range(1, DEMO_POS + 1):
        device_id = f"demo-pos-{n:02d}"
        device = session.scalar(select(Device).where(Device.device_id == device_id))
        if device is None:
            device, creds[device_id] = add_device(
                session,
                NewDevice(device_id, "pos", module="canteen", name=f"POS {n}"),
                actor=actor,
                now=now,
            )
            _add_pos(session, device, actor, now)
        elif device_id in known:
            creds[device_id] = known[device_id]
        else:
            creds[device_id] = rotate_credentials(session, device, actor=actor, now=now)
    _write_private(store, creds)
    return creds


def _canteen_setup(session: Session, actor: Actor, now: datetime) -> None:
    from onecard.modules.canteen import rules
    from onecard.modules.canteen.setup import create_merchant, set_meal_periods, set_rule

    site = session.scalar(select(Site).order_by(Site.id))
    assert site is not None
    create_merchant(session, "canteen-1", "第一食堂 Canteen 1", site, actor=actor, now=now)
    set_meal_periods(
        session, site, [rules.MealPeriod(k, a, b) for k, a, b in MEALS], actor=actor, now=now
    )
    for identity in ("student", "staff"):
        set_rule(
            session,
            identity,
            rules.HolderRule(per_meal_limit_fen=5000, per_day_limit_fen=15000),
            actor=actor,
            now=now,
        )


def _add_pos(session: Session, device: Device, actor: Actor, now: datetime) -> None:
    from onecard.modules.canteen.models import Merchant
    from onecard.modules.canteen.rules import Mode
    from onecard.modules.canteen.setup import add_pos

    merchant = session.scalar(select(Merchant).where(Merchant.code == "canteen-1"))
    assert merchant is not None
    add_pos(session, merchant, device, mode=Mode.FREE, actor=actor, now=now)


def _write_private(path: Path, data: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    tmp.replace(path)


def _start_fleet(settings: Settings, credentials: dict[str, tuple[str, str, Any]]) -> Any:
    from onecard.device_agents.protocol.codes import DeviceKind
    from onecard.device_agents.runtime.mqtt import BrokerAddress
    from onecard.device_agents.sim.fleet import Fleet, FleetSettings

    fleet = Fleet(
        FleetSettings(
            devices=len(credentials),
            kinds=(DeviceKind.POS,),
            broker=BrokerAddress(settings.mqtt.host, settings.mqtt.port),
            folder=data_folder(settings) / "fleet",
            credentials={
                dev: (user, pw, DeviceKind.POS) for dev, (user, pw, _k) in credentials.items()
            },
            tap_rate=0.05,
            cards=settings.demo.people,
        )
    )
    fleet.start()
    log.info("simulated fleet started", extra={"devices": len(credentials)})
    return fleet
