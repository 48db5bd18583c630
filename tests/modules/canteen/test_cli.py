"""``onecard canteen ...`` against the test database and a key store named by the settings:
provisioning a POS key, re-running records a failure left, printing a statement with its
payout. The commands come to ``onecard`` through ``onecard_cli_commands``."""

import json
from collections.abc import Iterator
from datetime import date

import pytest
from click.testing import CliRunner

from onecard.config import KeysSettings
from onecard.keys import algorithms as alg
from onecard.keys.softhsm import combine_components
from onecard.modules.canteen import cli, services, setup, terminalkeys
from onecard.modules.canteen.payout import request_payout
from onecard.modules.canteen.rules import Allowance, HolderRule
from onecard.modules.canteen.services import SaleRequest
from onecard.modules.canteen.settlement import PosReport, settle_day
from onecard.platform.cards.keyring import Keyring
from onecard.platform.errors import Conflict
from onecard.platform.tenants.models import Tenant
from onecard.testing.cardkit import KEK

KEK_VAR = "CANTEEN_TEST_KEK"


@pytest.fixture
def keyring(tmp_path, monkeypatch) -> Iterator[Keyring]:
    """The keyring ``[keys]`` names: the commands open the same store (one per file in a
    process); the POS terminals are provisioned by it and the hook uses it."""
    monkeypatch.chdir(tmp_path)  # no ./config.toml
    monkeypatch.setenv(KEK_VAR, KEK.hex())
    ring = Keyring.from_settings(KeysSettings(store=str(tmp_path / "k.store"), kek_env=KEK_VAR))
    terminalkeys.install_keyring(ring)
    yield ring
    terminalkeys.install_keyring(None)


@pytest.fixture
def run(database_url, tmp_path, keyring):
    """``run(command, *args)``: a canteen command in-process with the test's settings."""
    env = {
        "ONECARD_CONFIG": None,
        "ONECARD_DATABASE__URL": database_url,
        "ONECARD_KEYS__STORE": str(tmp_path / "k.store"),
        "ONECARD_KEYS__KEK_ENV": KEK_VAR,
    }
    return lambda command, *args: CliRunner().invoke(command, list(args), env=env)


def slug(world) -> str:
    tenant = world.session.get(Tenant, world.site.tenant_id)
    assert tenant is not None
    return tenant.slug


def test_the_module_contributes_its_commands():
    names = sorted(c.name for c in cli.COMMANDS)  # type: ignore[attr-defined]
    assert names == ["pos-key", "reprocess", "statement"]


def test_pos_key_prints_the_key_wrapped_never_in_clear(world, run, keyring, now):
    args = ["--tenant", slug(world), "--device", world.make_pos().device_id]
    world.session.commit()  # (SQLite: touch nothing until the command has run)

    result = run(cli.pos_key_command, *args)

    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    [key] = out["keys"]
    service = keyring.service(world.session, actor=world.actor, now=now)
    parts = service.export_components(
        module="canteen", tenant_id=world.site.tenant_id, application="canteen-record",
        key_name="TK", version=1,
    )  # fmt: skip
    tk = combine_components(alg.Algorithm(key["algorithm"]), parts)
    clear = alg.ecb_decrypt(alg.Algorithm(key["algorithm"]), tk, bytes.fromhex(key["wrapped"]))
    assert alg.kcv(alg.Algorithm(key["algorithm"]), clear).hex() == key["kcv"]
    assert clear.hex() not in result.output


def test_reprocess_records_what_a_failure_left_and_says_so(
    world, at, terminals, upload, run, monkeypatch
):
    setup.set_rule(world.session, "staff", HolderRule(), offline=Allowance(3000, 3),
                   actor=world.actor, now=at(8))  # fmt: skip
    card, t = world.holder(), terminals()
    _v, rec, _s = t.device.sell(card.card_no, at(12), HolderRule(), Allowance(3000, 3),
                                list_fen=900)  # fmt: skip
    monkeypatch.setattr(terminalkeys, "process_keyring", _broken)
    upload(t, [rec])
    assert world.failures
    tenant, device = slug(world), t.row.device_id
    world.session.commit()

    first = run(cli.reprocess_command, "--tenant", tenant)
    again = run(cli.reprocess_command, "--tenant", tenant, "--device", device)

    assert (first.exit_code, first.output) == (0, "records 1, sales recorded 1\n")
    assert (again.exit_code, again.output) == (0, "records 0, sales recorded 0\n")
    assert world.balances(card)["merchant"] == 900


def test_statement_shows_the_payout(world, at, run):
    services.sell(world.session, world.fixed, world.holder(), SaleRequest("l1"),
                  actor=world.actor, now=at(12))  # fmt: skip
    statement = settle_day(world.session, world.merchant, date(2026, 9, 1),
                           {world.fixed.device_id: PosReport(1, 1200)}, actor=world.actor,
                           now=at(22))  # fmt: skip
    request_payout(world.session, world.session.get(Tenant, world.site.tenant_id), statement,
                   actor=world.actor, now=at(23))  # fmt: skip
    args = ["--tenant", slug(world), "--merchant", world.merchant.code, "--day", "2026-09-01"]
    world.session.commit()

    result = run(cli.statement_command, *args)

    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert (shown["status"], shown["net_fen"]) == ("balanced", 1200)
    assert (shown["payout"]["status"], shown["payout"]["amount_fen"]) == ("posted", 1200)


def test_an_unknown_merchant_is_a_one_line_error(world, run):
    args = ["--tenant", slug(world), "--merchant", "nope", "--day", "2026-09-01"]
    world.session.commit()

    result = run(cli.statement_command, *args)

    assert (result.exit_code, result.output.strip()) == (1, "Error: no merchant nope")


def _broken() -> Keyring:
    raise Conflict("the key service is unreachable", reason="key_unavailable")
