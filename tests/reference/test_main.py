"""The entry point in a subprocess: how the server refuses to start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from harness.topology import free_port
from reference import migrate
from reference.db import DatabaseUnavailable, make_engine
from reference.main import EXIT_DATABASE
from tests.conftest import postgres_server_url


def run_server(
    tmp_path: Path, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """python -m reference with only env set, run until it exits."""
    return subprocess.run(
        [sys.executable, "-m", "reference", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unreachable_database_is_one_line_without_the_password(
    tmp_path: Path,
) -> None:
    url = "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/cms"
    result = run_server(tmp_path, "--port", str(free_port()), env={"DATABASE_URL": url})

    assert result.returncode == EXIT_DATABASE
    (line,) = result.stderr.strip().splitlines()
    assert "cannot use database postgresql+psycopg://postgres:***@127.0.0.1:1/cms" in (
        line
    )
    assert "Connection refused" in line
    assert line.endswith("; start or create the database, or fix DATABASE_URL")
    assert "s3cret" not in result.stderr


@pytest.mark.postgres
def test_missing_database_is_one_line(tmp_path: Path) -> None:
    url = make_url(postgres_server_url()).set(database="cp_test_never_created")
    result = run_server(
        tmp_path,
        "--port",
        str(free_port()),
        env={"DATABASE_URL": url.render_as_string(hide_password=False)},
    )

    assert result.returncode == EXIT_DATABASE
    (line,) = result.stderr.strip().splitlines()
    assert 'database "cp_test_never_created" does not exist' in line
    assert line.endswith("or fix DATABASE_URL")


def test_sqlite_file_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").touch()
    url = f"sqlite:///{tmp_path}/file/cp.db"  # a folder under a plain file
    result = run_server(tmp_path, "--port", str(free_port()), env={"DATABASE_URL": url})

    assert result.returncode == EXIT_DATABASE
    (line,) = result.stderr.strip().splitlines()
    assert f"cannot use database {url} (" in line


def test_waiting_for_an_unreachable_database_says_so() -> None:
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/cms")
    try:
        with pytest.raises(DatabaseUnavailable, match="Connection refused"):
            migrate.wait_for_head(engine, timeout=0.3, poll=0.05)
    finally:
        engine.dispose()
