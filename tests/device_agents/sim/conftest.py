"""Fixtures of the simulator tests: the runtime tests' mosquitto fixture and platform double."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _load_double():  # type: ignore[no-untyped-def]
    name = "oc_platform_double"
    if name not in sys.modules:
        path = Path(__file__).parents[1] / "runtime" / "platform_double.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


double = _load_double()


@pytest.fixture
def broker(tmp_path):
    mosq = double.start_mosquitto(tmp_path / "mosquitto")
    yield mosq
    mosq.stop()


@pytest.fixture
def platform(broker):
    plat = double.PlatformDouble(broker.port)
    yield plat
    plat.close()
    assert plat.errors == [], "simulated devices sent messages the AsyncAPI document refuses"
