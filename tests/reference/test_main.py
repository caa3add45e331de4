"""The entry point in a subprocess: how the server refuses to start."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from harness.topology import free_port
from reference import migrate
from reference.db import DatabaseUnavailable, make_engine
from reference.exits import EXIT_DATABASE, EXIT_LISTEN, EXIT_OK, EXIT_SERVE_FAILED
from reference.main import cli_overrides, parse_args
from tests.conftest import postgres_server_url
from tests.reference.support import wait_for

# The server with cron and webhook delivery failing to start.
SERVICES_FAIL = """
import sys

import reference.app
from reference.main import main


async def fail(*args):
    raise RuntimeError("cron cannot start")


reference.app.start_services = fail
sys.exit(main(sys.argv[1:]))
"""


def run_server(
    tmp_path: Path, *args: str, env: dict[str, str], code: str | None = None
) -> subprocess.CompletedProcess[str]:
    """python -m reference (or code) with only env set, run until it exits."""
    start = ["-m", "reference"] if code is None else ["-c", code]
    return subprocess.run(
        [sys.executable, *start, *args],
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


def test_port_in_use_alone_is_one_line_before_anything_starts(
    tmp_path: Path,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_server(
            tmp_path,
            "--port",
            str(port),
            env={"DATABASE_URL": f"sqlite:///{tmp_path}/data/cp.db"},
        )

    assert result.returncode == EXIT_LISTEN
    (line,) = result.stderr.strip().splitlines()
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use)" in line
    assert list(tmp_path.iterdir()) == []  # nothing migrated or written


def test_unknown_host_alone_is_one_line(tmp_path: Path) -> None:
    result = run_server(
        tmp_path,
        "--host",
        "999.1.1.1",
        env={"DATABASE_URL": f"sqlite:///{tmp_path}/data/cp.db"},
    )

    assert result.returncode == EXIT_LISTEN
    (line,) = result.stderr.strip().splitlines()
    assert "server.host '999.1.1.1' is not an address of this machine" in line
    assert list(tmp_path.iterdir()) == []


def test_app_that_fails_to_start_exits_with_our_code(tmp_path: Path) -> None:
    port = free_port()
    result = run_server(
        tmp_path,
        "--port",
        str(port),
        env={"DATABASE_URL": f"sqlite:///{tmp_path}/cp.db"},
        code=SERVICES_FAIL,
    )

    assert result.returncode == EXIT_SERVE_FAILED, result.stderr
    assert "RuntimeError: cron cannot start" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith(
        f"the app did not start serving on 127.0.0.1:{port}; see the lines above"
    )


def test_command_line_values_that_are_falsy_still_count() -> None:
    args = parse_args(["--port", "0", "--instance-id", ""])
    assert cli_overrides(args) == {"server": {"port": 0}, "instance": {"id": ""}}
    assert cli_overrides(parse_args([])) == {}


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--port", "0"], {}), ([], {"CLUSTERPROOF_SERVER__PORT": "0"})],
    ids=["--port 0", "CLUSTERPROOF_SERVER__PORT=0"],
)
def test_port_0_serves_on_a_free_port_and_logs_it(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    server, log_path = launch(tmp_path, args, env)
    try:
        wait_for(lambda: "serving on " in log_path.read_text(), timeout=30)
        found = re.search(r"serving on 127\.0\.0\.1:(\d+)$", log_path.read_text(), re.M)
        assert found is not None, log_path.read_text()
        port = int(found[1])
        assert port not in (0, 1337)  # 1337 is the default port
        wait_for(lambda: _live(port))
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=15) == EXIT_OK
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def launch(
    tmp_path: Path,
    args: list[str],
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
) -> tuple[subprocess.Popen[bytes], Path]:
    """python -m reference alone on SQLite in tmp_path; the process and the
    log file its stderr goes to."""
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [*prefix, sys.executable, "-m", "reference", *args],
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "DATABASE_URL": f"sqlite:///{tmp_path}/cp.db",
                **(env or {}),
            },
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    return server, log_path


def start_server(
    tmp_path: Path, *, prefix: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """python -m reference alone on a free port, once it answers; the
    process, its port and its log file."""
    port = free_port()
    server, log_path = launch(tmp_path, ["--port", str(port)], prefix=prefix)
    try:
        wait_for(lambda: server.poll() is None and _live(port), timeout=30)
    except BaseException:
        server.kill()
        server.wait()
        raise
    return server, port, log_path


@pytest.mark.parametrize(
    "signum", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name
)
def test_stop_signals_stop_gracefully_and_are_named(
    tmp_path: Path, signum: signal.Signals
) -> None:
    server, _, log_path = start_server(tmp_path)
    try:
        server.send_signal(signum)
        assert server.wait(timeout=15) == EXIT_OK
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    log = log_path.read_text()
    assert f"pid {server.pid}: {signum.name} received, stopping gracefully" in log
    assert "cron stopped" in log  # the app's shutdown ran
    assert log.rstrip().endswith(f"pid {server.pid}: stopped")


def test_sighup_stays_ignored_under_nohup(tmp_path: Path) -> None:
    server, port, log_path = start_server(tmp_path, prefix=("nohup",))
    try:
        server.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert server.poll() is None and _live(port)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=15) == EXIT_OK
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    assert "SIGHUP" not in log_path.read_text()


def _live(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/_health/live").status_code == 200
    except httpx.HTTPError:
        return False
