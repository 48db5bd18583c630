"""`onecard keys …`: key ceremonies on a software key store file.

Commands: generate, import-component, export-components, list, rotate, kcv. Every command
needs the store path and its KEK (a file, or an environment variable holding hex/base64).
No command prints key bytes except ``export-components``, whose purpose is to hand each
custodian a component (printed with its KCV). Components typed in are read without echo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from onecard.keys.algorithms import Algorithm, kcv
from onecard.keys.errors import KeyServiceError
from onecard.keys.hsm import KeyComponent, KeyInfo, KeyRef
from onecard.keys.keystore import load_kek
from onecard.keys.softhsm import SoftHsm

DEFAULT_KEK_ENV = "ONECARD_KEK"
_ALGS = click.Choice([a.value for a in Algorithm])


@dataclass(frozen=True)
class _Store:
    path: Path
    kek_file: Path | None
    kek_env: str

    def open(self, *, create: bool = False) -> SoftHsm:
        kek = load_kek(path=self.kek_file) if self.kek_file else load_kek(env=self.kek_env)
        return SoftHsm(self.path, kek, create=create)


def _hex(value: str, what: str) -> bytes:
    try:
        return bytes.fromhex(value.replace(" ", ""))
    except ValueError:
        raise click.BadParameter(f"{what} is not hex") from None


def _line(info: KeyInfo) -> str:
    flags = ("" if info.active else " retired") + ("" if info.exportable else " no-export")
    return (
        f"{info.ref!s:<40} {info.algorithm.value:<4} levels={info.levels} "
        f"kcv={info.kcv.hex().upper()}{flags}"
    )


class _KeysGroup(click.Group):
    """Turns key-service errors into clean CLI errors (never a traceback with key context)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KeyServiceError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


@click.group(name="keys", cls=_KeysGroup)
@click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="ONECARD_KEYSTORE",
    required=True,
    help="Key store file (env ONECARD_KEYSTORE).",
)
@click.option(
    "--kek-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding the 32-byte KEK (raw, hex or base64).",
)
@click.option(
    "--kek-env",
    default=DEFAULT_KEK_ENV,
    show_default=True,
    help="Name of the environment variable holding the KEK (hex or base64).",
)
@click.pass_context
def keys(ctx: click.Context, store_path: Path, kek_file: Path | None, kek_env: str) -> None:
    """Key store ceremonies: generate, import/export components, rotate, list, check values."""
    ctx.obj = _Store(store_path, kek_file, kek_env)


def _ref_args(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option("--version", "version", type=click.IntRange(0, 255), default=1)(f)
    f = click.argument("name")(f)
    f = click.argument("application")(f)
    return click.argument("tenant_id", type=int)(f)


@keys.command()
@_ref_args
@click.option("--alg", "algorithm", type=_ALGS, required=True)
@click.option("--levels", type=click.IntRange(0, 3), required=True)
@click.option("--no-export", is_flag=True, help="Never allow component export of this key.")
@click.pass_obj
def generate(
    store: _Store,
    tenant_id: int,
    application: str,
    name: str,
    version: int,
    algorithm: str,
    levels: int,
    no_export: bool,
) -> None:
    """Generate a random key inside the store; prints its KCV."""
    hsm = store.open(create=True)
    ref = KeyRef(tenant_id, application, name, version)
    info = hsm.generate_key(ref, Algorithm(algorithm), levels, exportable=not no_export)
    click.echo(_line(info))


def _prompt_component(n: int, algorithm: Algorithm) -> KeyComponent:
    value = _hex(click.prompt(f"component {n} (hex)", hide_input=True), f"component {n}")
    check = _hex(click.prompt(f"component {n} KCV (hex)"), f"component {n} KCV")
    click.echo(f"component {n}: computed KCV {kcv(algorithm, value).hex().upper()}")
    return KeyComponent(value, check)


@keys.command("import-component")
@_ref_args
@click.option("--alg", "algorithm", type=_ALGS, required=True)
@click.option("--levels", type=click.IntRange(0, 3), required=True)
@click.option("--components", "count", type=click.IntRange(2, 3), default=2, show_default=True)
@click.option("--kcv", "expected_kcv", help="KCV the assembled key must have (hex).")
@click.option("--no-export", is_flag=True)
@click.pass_obj
def import_component(
    store: _Store,
    tenant_id: int,
    application: str,
    name: str,
    version: int,
    algorithm: str,
    levels: int,
    count: int,
    expected_kcv: str | None,
    no_export: bool,
) -> None:
    """Assemble a key from components typed in turn by each custodian (no echo)."""
    hsm = store.open(create=True)
    alg = Algorithm(algorithm)
    components = [_prompt_component(n, alg) for n in range(1, count + 1)]
    expected = _hex(expected_kcv, "KCV") if expected_kcv else None
    ref = KeyRef(tenant_id, application, name, version)
    info = hsm.import_components(
        ref, alg, levels, components, expected_kcv=expected, exportable=not no_export
    )
    click.echo(_line(info))


@keys.command("export-components")
@_ref_args
@click.option("--count", type=click.IntRange(2, 3), default=2, show_default=True)
@click.pass_obj
def export_components(
    store: _Store, tenant_id: int, application: str, name: str, version: int, count: int
) -> None:
    """Split a key into components for custodians: prints each component and its KCV."""
    hsm = store.open()
    ref = KeyRef(tenant_id, application, name, version)
    info = hsm.key_info(ref)
    for n, comp in enumerate(hsm.export_components(ref, count), start=1):
        click.echo(f"component {n}: {comp.value.hex().upper()}  kcv={comp.kcv.hex().upper()}")
    click.echo(f"key kcv={info.kcv.hex().upper()}")


@keys.command("list")
@click.option("--tenant", "tenant_id", type=int, default=None)
@click.pass_obj
def list_keys(store: _Store, tenant_id: int | None) -> None:
    """List keys with algorithm, levels and KCV."""
    for info in store.open().list_keys(tenant_id):
        click.echo(_line(info))


@keys.command()
@click.argument("tenant_id", type=int)
@click.argument("application")
@click.argument("name")
@click.pass_obj
def rotate(store: _Store, tenant_id: int, application: str, name: str) -> None:
    """Generate the next version with the latest version's algorithm and levels."""
    hsm = store.open()
    same = [
        k
        for k in hsm.list_keys(tenant_id)
        if k.ref.application == application and k.ref.name == name
    ]
    if not same:
        raise click.ClickException(f"no key {tenant_id}/{application}/{name} to rotate")
    latest = max(same, key=lambda k: k.ref.version)
    ref = latest.ref.with_version(latest.ref.version + 1)
    info = hsm.generate_key(ref, latest.algorithm, latest.levels, exportable=latest.exportable)
    click.echo(_line(info))


@keys.command("kcv")
@_ref_args
@click.pass_obj
def kcv_command(store: _Store, tenant_id: int, application: str, name: str, version: int) -> None:
    """Print a stored key's check value."""
    info = store.open().key_info(KeyRef(tenant_id, application, name, version))
    click.echo(info.kcv.hex().upper())


def main() -> None:  # pragma: no cover - standalone entry for ceremonies
    """Run the group standalone (``python -m onecard.keys.cli``)."""
    keys(prog_name="onecard keys")


if __name__ == "__main__":  # pragma: no cover
    main()
