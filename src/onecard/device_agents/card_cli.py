"""Development commands that run a card or PSAM emulator: `card emulate` and `psam emulate`.

Owns turning command-line options and a development key file into a personalised emulator, and
serving it either in a vpcd virtual reader (``--vpcd HOST:PORT``) or on stdin/stdout (one hex
APDU per line in, one hex response per line out). The click groups are `card` and `psam`;
`cli` bundles both for standalone use (``python -m onecard.device_agents.card_cli``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from onecard.device_agents.emulators.cpu_card import CpuCard
from onecard.device_agents.emulators.devkeys import DevKeysError, load_dev_keys
from onecard.device_agents.emulators.personalise import CardSpec, derive_card_keys, personalise
from onecard.device_agents.emulators.psam import Psam, psam_image
from onecard.device_agents.emulators.store import JsonStore
from onecard.device_agents.readers.vpcd import VpcdTransport, parse_endpoint
from onecard.keys.algorithms import Algorithm


def _hex(ctx: click.Context, param: click.Parameter, value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError as err:
        raise click.BadParameter("must be hexadecimal") from err


def _pin(ctx: click.Context, param: click.Parameter, value: str | None) -> bytes | None:
    if value is None:
        return None
    if not value.isdigit() or not 4 <= len(value) <= 12:
        raise click.BadParameter("a PIN is 4 to 12 decimal digits")
    return bytes.fromhex(value + ("F" if len(value) % 2 else ""))  # BCD, F-padded


def _keys(path: str) -> Any:
    try:
        return load_dev_keys(path)
    except DevKeysError as err:
        raise click.ClickException(str(err)) from err


@click.group("card")
def card() -> None:
    """User-card (CPU purse) emulator for development."""


@card.command("emulate")
@click.option("--profile", type=click.Choice(["mohurd", "mot", "campus"]), default="mohurd")
@click.option("--alg", "alg_name", type=click.Choice(["3des", "sm4"]), default="3des")
@click.option("--dev-keys", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--asn", required=True, callback=_hex, help="application serial number, hex")
@click.option("--balance", type=click.IntRange(0, 0x7FFFFFFF), default=0, help="fen")
@click.option("--pin", callback=_pin, help="PIN digits (BCD on the card)")
@click.option("--issuer-factor", callback=_hex, help="second-level factor, 8 bytes hex")
@click.option("--vpcd", "endpoint", help="serve in a vpcd reader at HOST:PORT")
@click.option("--image", type=click.Path(dir_okay=False), help="persist the card image here")
def card_emulate(profile: str, alg_name: str, dev_keys: str, asn: bytes, balance: int,
                 pin: bytes | None, issuer_factor: bytes | None, endpoint: str | None,
                 image: str | None) -> None:  # fmt: skip
    """Personalise a card from development master keys and serve it."""
    keys = _keys(dev_keys)
    algorithm = Algorithm(alg_name)
    spec = CardSpec(profile, algorithm, asn, issuer_factor, balance=balance, pin=pin,
                    key_version=keys.key_version)  # fmt: skip
    if image and Path(image).exists():
        emulator = CpuCard.open(image)
    else:
        try:
            card_image = personalise(spec, derive_card_keys(spec, keys.masters(algorithm)))
        except ValueError as err:
            raise click.ClickException(str(err)) from err
        emulator = CpuCard(card_image, store=JsonStore(image))
        emulator.save()
    _serve(emulator, endpoint, f"{profile}/{alg_name} card, balance {balance} fen")


@click.group("psam")
def psam() -> None:
    """PSAM (terminal SAM) emulator for development."""


@psam.command("emulate")
@click.option("--dev-keys", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--terminal", required=True, callback=_hex, help="6-byte terminal number, hex")
@click.option("--tts", type=click.IntRange(0, 0xFFFFFFFE), default=1, help="first serial")
@click.option("--vpcd", "endpoint", help="serve in a vpcd reader at HOST:PORT")
@click.option("--image", type=click.Path(dir_okay=False), help="persist the PSAM image here")
def psam_emulate(dev_keys: str, terminal: bytes, tts: int, endpoint: str | None,
                 image: str | None) -> None:  # fmt: skip
    """Load development master keys into a PSAM and serve it."""
    keys = _keys(dev_keys)
    if image and Path(image).exists():
        emulator = Psam.open(image)
    else:
        masters = {a: keys.masters(a) for a in Algorithm}
        try:
            psam_img = psam_image(masters, terminal=terminal, tts=tts, key_version=keys.key_version)
        except ValueError as err:
            raise click.ClickException(str(err)) from err
        emulator = Psam(psam_img, store=JsonStore(image))
        emulator.save()
    _serve(emulator, endpoint, f"PSAM, terminal {terminal.hex().upper()}")


def _serve(emulator: Any, endpoint: str | None, what: str) -> None:
    if endpoint is None:
        click.echo(f"{what}: reading hex APDUs from stdin", err=True)
        _serve_stdio(emulator)
        return
    host, port = parse_endpoint(endpoint)
    click.echo(f"{what}: inserted into vpcd at {host}:{port} (Ctrl-C removes it)", err=True)
    try:
        VpcdTransport(emulator, host, port).serve_forever()
    except OSError as err:
        raise click.ClickException(f"cannot reach vpcd at {host}:{port}: {err}") from err
    except KeyboardInterrupt:
        pass


def _serve_stdio(emulator: Any) -> None:
    for line in sys.stdin:
        text = line.strip().replace(" ", "")
        if not text:
            continue
        try:
            apdu = bytes.fromhex(text)
        except ValueError:
            click.echo("6700")
            continue
        click.echo(emulator.process_apdu(apdu).hex().upper())


cli = click.Group("emulators", commands={"card": card, "psam": psam},
                  help="Card and PSAM emulators (development only).")  # fmt: skip

if __name__ == "__main__":
    cli()
