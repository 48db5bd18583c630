"""Running Alembic migrations from code (``onecard db upgrade``, tests, ``onecard run``).

The platform's revisions live in ``migrations/versions``; every installed module keeps its own
on a branch labelled with its key in ``<module package>/migrations`` (ARCHITECTURE §5). Modules
are found through their ``onecard.modules`` entry points and located with
:func:`importlib.util.find_spec`, never imported by name.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from onecard.platform.manifest import ModuleManifest

MIGRATIONS_DIR = Path(__file__).resolve().parents[4] / "migrations"


def module_version_locations(manifests: list[ModuleManifest] | None = None) -> list[Path]:
    """The ``migrations/`` folders of the installed modules that have one, in key order."""
    if manifests is None:
        from onecard.platform.registry import discover_manifests

        manifests = discover_manifests()
    found = []
    for manifest in sorted(manifests, key=lambda m: m.key):
        spec = importlib.util.find_spec(manifest.package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for root in spec.submodule_search_locations:
            folder = Path(root) / "migrations"
            if folder.is_dir():
                found.append(folder)
    return found


def alembic_config(url: str, manifests: list[ModuleManifest] | None = None) -> Config:
    """An Alembic configuration for ``url``: the platform's versions plus every module's."""
    if not (MIGRATIONS_DIR / "env.py").exists():
        raise RuntimeError(f"migrations folder not found at {MIGRATIONS_DIR}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    locations = [MIGRATIONS_DIR / "versions", *module_version_locations(manifests)]
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option(
        "version_locations", os.pathsep.join(str(p) for p in locations).replace("%", "%%")
    )
    return cfg


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Bring the database of ``engine`` up to ``revision`` (default: every branch's head)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def current(engine: Engine) -> str | None:
    """The revision the database is at (several heads joined by ``,``), or ``None`` if empty."""
    with engine.connect() as connection:
        heads = MigrationContext.configure(connection).get_current_heads()
    return ",".join(sorted(heads)) if heads else None
