"""The test plugin's own promise: ``postgres_only`` tests fail loudly without PostgreSQL."""

import os
import subprocess
import sys


def test_postgres_only_test_fails_loudly_on_sqlite(tmp_path):
    (tmp_path / "test_needs_pg.py").write_text(
        "import pytest\n\n\n@pytest.mark.postgres_only\ndef test_needs_pg():\n    pass\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ONECARD_TEST_DATABASE_URL"}

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "onecard.testing.fixtures",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::pytest.PytestUnknownMarkWarning",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert run.returncode == 1
    assert "this test needs PostgreSQL" in run.stdout
