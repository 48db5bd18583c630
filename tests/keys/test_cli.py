"""`onecard keys …` ceremonies on a store file."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from onecard.keys.algorithms import Algorithm
from onecard.keys.cli import keys
from onecard.keys.softhsm import split_key

Run = Callable[..., Result]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    kek_file = tmp_path / "kek"
    kek_file.write_text(os.urandom(32).hex())
    base = ["--store", str(tmp_path / "k.store"), "--kek-file", str(kek_file)]

    def _run(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(keys, [*base, *args], input=input, catch_exceptions=False)

    return _run


def _kcv(output: str) -> str:
    found = re.search(r"kcv=([0-9A-F]{6})", output)
    assert found
    return found.group(1)


def test_generate_list_and_kcv_show_check_values_only(run: Run, tmp_path: Path) -> None:
    out = run("generate", "7", "purse", "DPK", "--alg", "sm4", "--levels", "2")
    assert out.exit_code == 0, out.output
    assert "7/purse/DPK/v1" in out.output
    listed = run("list")
    assert _kcv(listed.output) == _kcv(out.output)
    assert run("kcv", "7", "purse", "DPK").output.strip() == _kcv(out.output)
    assert not re.search(r"[0-9A-F]{32}", out.output + listed.output)


def test_exported_components_import_into_another_store(run: Run, tmp_path: Path) -> None:
    made = run("generate", "7", "purse", "DTK", "--alg", "3des", "--levels", "1")
    exported = run("export-components", "7", "purse", "DTK", "--count", "2").output
    comps = re.findall(r"component \d: ([0-9A-F]{32})  kcv=([0-9A-F]{6})", exported)
    assert len(comps) == 2
    answers = "".join(f"{value}\n{check}\n" for value, check in comps)
    imported = run(
        "import-component",
        "7",
        "purse",
        "DTK",
        "--version",
        "2",
        "--alg",
        "3des",
        "--levels",
        "1",
        "--kcv",
        _kcv(made.output),
        input=answers,
    )
    assert imported.exit_code == 0, imported.output
    assert _kcv(imported.output) == _kcv(made.output)
    for value, _ in comps:
        assert value not in imported.output  # typed without echo


def test_import_refuses_a_component_with_a_wrong_kcv(run: Run) -> None:
    a, b = split_key(Algorithm.TDES, os.urandom(16), 2)
    answers = f"{a.value.hex()}\n{a.kcv.hex()}\n{b.value.hex()}\n000000\n"
    result = run(
        "import-component", "7", "purse", "DPK", "--alg", "3des", "--levels", "1", input=answers
    )
    assert result.exit_code != 0
    assert "KcvMismatch" in result.output


def test_rotate_creates_the_next_version(run: Run) -> None:
    run("generate", "7", "purse", "DLK", "--alg", "3des", "--levels", "2")
    out = run("rotate", "7", "purse", "DLK")
    assert "7/purse/DLK/v2" in out.output
    assert "levels=2" in out.output


def test_tampered_store_is_reported_cleanly(run: Run, tmp_path: Path) -> None:
    run("generate", "7", "purse", "DLK", "--alg", "3des", "--levels", "2")
    store = tmp_path / "k.store"
    blob = bytearray(store.read_bytes())
    blob[-3] ^= 0xFF
    store.write_bytes(bytes(blob))
    out = run("list")
    assert out.exit_code != 0
    assert "KeyStoreTampered" in out.output
