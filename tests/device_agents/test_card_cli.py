"""`card emulate` / `psam emulate`: development keys only, keys diversified as the spec says."""

from __future__ import annotations

import json

from click.testing import CliRunner

from onecard.device_agents.card_cli import cli
from onecard.keys.algorithms import Algorithm


def _key_file(tmp_path, kit, development=True):
    doc: dict[str, object] = {n: k.hex() for n, k in kit.masters(Algorithm.TDES).items()}
    if development:
        doc["development"] = True
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_card_emulate_refuses_keys_not_marked_development(kit, tmp_path):
    args = ["card", "emulate", "--dev-keys", _key_file(tmp_path, kit, False), "--asn", "00" * 8]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert '"development": true' in result.output


def test_card_emulate_serves_the_spec_card_on_stdin(kit, tmp_path):
    keys = _key_file(tmp_path, kit)
    args = ["card", "emulate", "--dev-keys", keys, "--asn", kit.ASN.hex(), "--issuer-factor",
            kit.ISSUER.hex(), "--balance", "10000", "--pin", "123456"]  # fmt: skip
    apdus = "00A4040009A00000000386980701\n0020000003123456\n805C000204\n"
    result = CliRunner().invoke(cli, args, input=apdus)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "000027109000"


def test_psam_emulate_answers_its_terminal_number(kit, tmp_path):
    args = ["psam", "emulate", "--dev-keys", _key_file(tmp_path, kit), "--terminal", "112233445566"]
    result = CliRunner().invoke(cli, args, input="00B0960006\n")
    assert result.output.splitlines()[-1] == "1122334455669000"
