"""Architecture rules checked by reading the code, not by running it."""

import ast
import platform
import sysconfig
from pathlib import Path

import pytest

import onecard.platform

SRC = Path(onecard.platform.__file__).parent
MONEY_FILES = sorted([*SRC.glob("ledger/*.py"), *SRC.rglob("services.py")])


def test_import_platform_is_the_standard_library_module():
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()

    assert Path(platform.__file__).resolve().is_relative_to(stdlib)
    assert platform.system()


def test_onecard_platform_is_our_package():
    assert SRC.name == "platform"
    assert SRC.parent.name == "onecard"
    assert (SRC / "ledger" / "posting.py").exists()


def floats_in(path: Path) -> list[int]:
    """Line numbers of every float literal and every ``float(...)`` call in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if (isinstance(node, ast.Constant) and isinstance(node.value, float))
        or (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "float"
        )
    ]


def test_money_code_files_are_found():
    assert {p.name for p in MONEY_FILES} >= {"posting.py", "operations.py", "services.py"}


@pytest.mark.parametrize("path", MONEY_FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_money_code_has_no_floats(path):
    assert floats_in(path) == [], f"floats in {path.relative_to(SRC)}"


def test_the_float_check_catches_literals_and_calls(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("fee = 0.1\nrate = float('1.5')\nfen = 150\n")

    assert floats_in(sample) == [1, 2]
