"""Command line of the device side: ``agent`` (one terminal) and ``sim`` (a simulated fleet).
The lead mounts both click commands in the ``onecard`` CLI."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import secrets
import sys
import threading
import time
from pathlib import Path

import click

from onecard.device_agents.personalities.pos_records import PosKey, PosKeyError
from onecard.device_agents.protocol.bundles import public_key_from_hex
from onecard.device_agents.protocol.codes import DeviceKind, ProtocolError
from onecard.device_agents.runtime.agent import AgentSettings, Handlers
from onecard.device_agents.runtime.host import AgentHost
from onecard.device_agents.runtime.mqtt import BrokerAddress
from onecard.device_agents.runtime.personality import load_personality
from onecard.device_agents.runtime.pos_terminal import PosTerminal, read_pos_key
from onecard.device_agents.sim.fleet import (
    FAULTS,
    Fleet,
    FleetSettings,
    load_credentials,
    tune_for_the_fleet,
)

KINDS = [k.value for k in DeviceKind]


def _broker(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter("HOST:PORT")
    return host, int(port)


def _make_driver(name: str, amount: int | None):  # type: ignore[no-untyped-def]
    if name == "sim":
        from onecard.device_agents.drivers.sim import SimulatedReader

        return SimulatedReader()
    if name == "wedge":
        from onecard.device_agents.drivers.wedge import LineReader

        return LineReader()
    from onecard.device_agents.drivers.pcsc import PcscReader

    return PcscReader(amount=amount)


@click.command("agent")
@click.option("--device", required=True, help="device id, [a-z0-9-]{3,64}")
@click.option("--kind", type=click.Choice(KINDS), required=True)
@click.option("--broker", default="127.0.0.1:1883", show_default=True, help="HOST:PORT")
@click.option("--username", default=None, help="MQTT username (defaults to the device id)")
@click.option("--password", default=None, envvar="ONECARD_DEVICE_PASSWORD")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--driver", type=click.Choice(["sim", "wedge", "pcsc"]), default="wedge")
@click.option("--config-public-key", default=None, help="tenant Ed25519 public key, hex")
@click.option("--amount", type=int, default=None, help="fen charged per tap (pcsc driver)")
@click.option(
    "--pos-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="POS: the key document `onecard canteen pos-key` printed (kept in the store)",
)
@click.option(
    "--transport-key",
    default=None,
    envvar="ONECARD_TRANSPORT_KEY",
    help="POS: hex of the transport key that unwraps --pos-key",
)
@click.option("-v", "--verbose", is_flag=True)
def agent_command(
    device: str,
    kind: str,
    broker: str,
    username: str | None,
    password: str | None,
    tls_ca: str | None,
    store: Path,
    driver: str,
    config_public_key: str | None,
    amount: int | None,
    pos_key: Path | None,
    transport_key: str | None,
    verbose: bool,
) -> None:
    """Run one terminal: read credentials from DRIVER, decide through the platform (or offline,
    with its kind's personality), upload records, apply lists and signed configuration."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO)
    host_name, port = _broker(broker)
    try:
        key = public_key_from_hex(config_public_key) if config_public_key else None
    except ProtocolError as err:
        raise click.BadParameter(str(err), param_hint="--config-public-key") from err
    mac_key = _pos_key(DeviceKind(kind), pos_key, transport_key)
    reader = _make_driver(driver, amount)
    host = AgentHost.open(
        AgentSettings(device_id=device, kind=DeviceKind(kind)),
        store,
        BrokerAddress(host_name, port, username or device, password, tls_ca),
        public_key=key,
        handlers=Handlers(open_door=reader.open_relay, reader_state=reader.state),
        rng=random.Random(secrets.randbits(64)),
        personality=load_personality,
    )
    if mac_key is not None and isinstance(host.agent.personality, PosTerminal):
        host.agent.personality.install_key(mac_key)
        click.echo(
            f"POS MAC key v{mac_key.version} installed (KCV {mac_key.kcv().hex()})", err=True
        )
    host.start()
    click.echo(f"agent {device} ({kind}) → {broker}; store {store}", err=True)
    try:
        while not getattr(reader, "at_end", False):
            presented = reader.read(0.5)
            if presented is not None:
                decision = host.tap(presented)
                reader.show(decision)
                if decision.beep:
                    reader.beep(decision.beep)
    except KeyboardInterrupt:
        pass
    finally:
        host.stop()
        reader.close()


def _pos_key(kind: DeviceKind, path: Path | None, transport_hex: str | None) -> PosKey | None:
    """The POS key of ``--pos-key``, unwrapped with ``--transport-key`` (a POS only)."""
    if path is None:
        return None
    if kind is not DeviceKind.POS:
        raise click.BadParameter("only a POS (--kind pos) has a MAC key", param_hint="--pos-key")
    if not transport_hex:
        hint = "needs --transport-key (or ONECARD_TRANSPORT_KEY)"
        raise click.BadParameter(hint, param_hint="--pos-key")
    try:
        return read_pos_key(path, transport_hex)
    except PosKeyError as err:
        raise click.BadParameter(str(err), param_hint="--pos-key") from None


@click.command("sim")
@click.option("--devices", type=int, default=10, show_default=True)
@click.option("--kinds", default="pos,door,gate", show_default=True, help="comma-separated")
@click.option("--broker", default="127.0.0.1:1883", show_default=True, help="HOST:PORT")
@click.option("--faults", default="", help=f"comma-separated from: {', '.join(FAULTS)}")
@click.option("--duration", type=float, default=30.0, show_default=True, help="seconds")
@click.option("--credentials", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--folder", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--tap-rate", type=float, default=0.2, show_default=True, help="taps/s/device")
@click.option("--config-public-key", default=None, help="tenant Ed25519 public key, hex")
@click.option("--seed", type=int, default=1, show_default=True)
def sim_command(
    devices: int,
    kinds: str,
    broker: str,
    faults: str,
    duration: float,
    credentials: Path | None,
    folder: Path | None,
    tap_rate: float,
    config_public_key: str | None,
    seed: int,
) -> None:
    """Run a fleet of simulated terminals in this process, then print its counters as JSON."""
    logging.basicConfig(level=logging.WARNING)
    chosen = {f for f in faults.split(",") if f}
    unknown = chosen - set(FAULTS)
    if unknown:
        raise click.BadParameter(f"unknown faults: {', '.join(sorted(unknown))}")
    try:
        kind_list = tuple(DeviceKind(k) for k in kinds.split(",") if k)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--kinds") from err
    host_name, port = _broker(broker)
    fleet = Fleet(
        FleetSettings(
            devices=devices,
            kinds=kind_list,
            broker=BrokerAddress(host_name, port),
            folder=folder or Path(f"./sim-{int(time.time())}"),
            faults=frozenset(chosen),
            credentials=load_credentials(credentials) if credentials else None,
            tap_rate=tap_rate,
            seed=seed,
            public_key_hex=config_public_key,
        )
    )
    tune_for_the_fleet()
    fleet.start()
    stop = threading.Event()
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait(duration)
    drained = fleet.drain(timeout=30)
    totals = fleet.totals()
    fleet.stop()
    json.dump({"drained": drained, **totals}, sys.stdout, indent=2)
    sys.stdout.write("\n")
