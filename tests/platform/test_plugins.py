"""The plugin host, proved with a module written by the test and found through a real
``onecard.modules`` entry point (a ``*.dist-info`` folder on ``sys.path``).

Every installed module gets a package name of its own, so Python's import cache cannot hand one
test the module another test wrote; the module key stays ``testmod``.
"""

import importlib
import itertools
import sys
import textwrap

import pytest

from onecard.platform.authz import permissions
from onecard.platform.db.base import Base
from onecard.platform.errors import PluginError
from onecard.platform.registry import Registry

_serial = itertools.count(1)

GOOD_HOOKS = """
    from onecard.platform.authz.permissions import Permission
    from onecard.platform.hookspecs import hookimpl
    from onecard.platform.manifest import MenuItem


    @hookimpl
    def onecard_permissions():
        return [Permission("{key}.use", "Use the test module")]


    @hookimpl
    def onecard_menu_items(tenant_id, permissions):
        return [MenuItem("{key}", "Test", "{key}.index", "{key}.use", order=5)]
"""


@pytest.fixture(autouse=True)
def _core_permissions_afterwards():
    """Loading a registry registers module permissions globally: forget them afterwards."""
    yield
    permissions.reset_to_core()


@pytest.fixture
def install(tmp_path, monkeypatch):
    """Factory: write a module package plus its dist-info, and put it on ``sys.path``."""
    packages = []

    def _install(key="testmod", *, hooks=GOOD_HOOKS, models=None, manifest=""):
        package = f"oc_testmod_{next(_serial)}"
        root = tmp_path / package
        root.mkdir()
        (root / "__init__.py").write_text(
            textwrap.dedent(f"""
            from onecard.platform.manifest import ModuleManifest

            MODULE = ModuleManifest(key="{key}", name="Test", version="1",
                                    package="{package}"{manifest})
        """)
        )
        (root / "hooks.py").write_text(textwrap.dedent(hooks).replace("{key}", key))
        if models is not None:
            (root / "models.py").write_text(textwrap.dedent(models))
        dist = tmp_path / f"{package}-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(f"[onecard.modules]\n{key} = {package}:MODULE\n")
        packages.append(package)
        return package

    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield _install
    for name in list(sys.modules):
        if name.split(".")[0] in packages:
            del sys.modules[name]


@pytest.fixture
def registry(install):
    install()
    return Registry.load()


PERMS = frozenset({"testmod.use", "people.view"})


# --- discovery -----------------------------------------------------------------------------


def test_module_is_found_through_its_entry_point(registry):
    assert registry.modules["testmod"].name == "Test"


def test_module_permissions_join_the_catalogue(registry):
    assert "testmod.use" in registry.permissions
    assert "testmod.use" in permissions.all_permissions()


def test_enabled_module_hooks_are_called(registry):
    batches = registry.hooks_for(frozenset({"testmod"})).onecard_permissions()

    assert [p.name for batch in batches for p in batch] == ["testmod.use"]


def test_disabled_module_hooks_are_not_called(registry):
    assert registry.hooks_for(frozenset()).onecard_permissions() == []


def test_unknown_module_key_is_refused(registry):
    with pytest.raises(PluginError):
        registry.check_module_key("nothere")


# --- menus ---------------------------------------------------------------------------------


def menu_keys(registry, enabled=frozenset({"testmod"}), perms=PERMS, **tenant):
    return [item.key for item in registry.menu(1, enabled, perms, **tenant)]


def test_menu_shows_an_enabled_modules_item_to_an_operator_with_its_permission(registry):
    assert menu_keys(registry) == ["testmod", "people"]  # order 5 comes before people's 10


def test_menu_hides_the_item_without_its_permission(registry):
    assert menu_keys(registry, perms=frozenset({"people.view"})) == ["people"]


def test_menu_hides_the_item_of_a_module_switched_off_for_the_tenant(registry):
    assert menu_keys(registry, enabled=frozenset()) == ["people"]


def test_menu_hides_items_the_tenant_hid(registry):
    assert menu_keys(registry, hidden=["testmod"]) == ["people"]


def test_menu_follows_the_tenants_order(registry):
    assert menu_keys(registry, order=["people", "testmod"]) == ["people", "testmod"]


# --- boot failures -------------------------------------------------------------------------


def test_unknown_hook_name_fails_the_boot(install):
    install(
        hooks=GOOD_HOOKS
        + """

    @hookimpl
    def onecard_not_a_hook():
        return []
"""
    )

    with pytest.raises(PluginError, match="unknown hook"):
        Registry.load()


def test_duplicate_permission_fails_the_boot(install):
    install(
        hooks="""
    from onecard.platform.authz.permissions import Permission
    from onecard.platform.hookspecs import hookimpl


    @hookimpl
    def onecard_permissions():
        return [Permission("{key}.use", "Use"), Permission("{key}.use", "Use again")]
"""
    )

    with pytest.raises(PluginError, match="registered twice"):
        Registry.load()


def test_permission_outside_the_modules_namespace_fails_the_boot(install):
    install(
        hooks="""
    from onecard.platform.authz.permissions import Permission
    from onecard.platform.hookspecs import hookimpl


    @hookimpl
    def onecard_permissions():
        return [Permission("people.erase", "Erase people")]
"""
    )

    with pytest.raises(PluginError, match=r"must start with 'testmod\.'"):
        Registry.load()


def test_reserved_module_key_fails_the_boot(install):
    install("ledger")

    with pytest.raises(PluginError, match="reserved"):
        Registry.load()


def test_modules_requiring_each_other_fail_the_boot(install):
    install("alpha", manifest=', requires=frozenset({"beta"})')
    install("beta", manifest=', requires=frozenset({"alpha"})')

    with pytest.raises(PluginError, match="cycle"):
        Registry.load()


def test_missing_required_module_fails_the_boot(install):
    install(manifest=', requires=frozenset({"nosuchmodule"})')

    with pytest.raises(PluginError, match="requires missing module"):
        Registry.load()


def test_module_that_requires_another_loads_after_it(install):
    install("alpha", manifest=', requires=frozenset({"beta"})')
    install("beta")

    order = [key for key in Registry.load().modules if key in {"alpha", "beta"}]
    assert order == ["beta", "alpha"]


@pytest.fixture
def bad_table():
    """A table name no other test uses; removed from the shared metadata afterwards."""
    name = f"wrongprefix_things_{next(_serial)}"
    yield name
    if name in Base.metadata.tables:
        Base.metadata.remove(Base.metadata.tables[name])


def test_table_without_the_module_prefix_fails_the_boot(install, bad_table):
    install(
        models=f"""
        from sqlalchemy.orm import Mapped, mapped_column

        from onecard.platform.db.base import Base


        class Thing(Base):
            __tablename__ = "{bad_table}"

            id: Mapped[int] = mapped_column(primary_key=True)
    """
    )

    with pytest.raises(PluginError, match="must start with 'testmod_'"):
        Registry.load()
