"""`clusterproof run` end to end: real instances, real sinks, exit codes,
and no process left behind, whatever went wrong."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness import cli, metrics
from harness.scenario import SCENARIO_DIR
from tests.conftest import postgres_server_url

pytestmark = pytest.mark.slow


def clusterproof(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # From tmp_path with a relative reports folder, as `nox -s reproduce` runs.
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            "--reports",
            "r",
            *args,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def processes_under(folder: Path) -> list[psutil.Process]:
    """Processes whose working directory is inside folder: our instances."""
    found = []
    for proc in psutil.process_iter(["cwd"]):
        cwd = proc.info.get("cwd") or ""
        if cwd.startswith(str(folder)) and proc.status() != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def result(tmp_path: Path, scenario: str) -> dict:
    return json.loads(
        (tmp_path / "r" / "latest" / scenario / "result.json").read_text()
    )


def scenario_dir(tmp_path: Path, name: str, edit: dict[str, str]) -> Path:
    """A copy of a shipped scenario with some text replaced."""
    folder = tmp_path / "scenarios"
    folder.mkdir(exist_ok=True)
    text = (SCENARIO_DIR / f"{name}.toml").read_text()
    for old, new in edit.items():
        assert old in text
        text = text.replace(old, new)
    (folder / f"{name}.toml").write_text(text)
    return folder


def test_reproduce_on_sqlite_shows_every_duplicate(tmp_path: Path) -> None:
    done = clusterproof(tmp_path, "--suite", "reproduce")
    assert done.returncode == 0, done.stderr

    two = result(tmp_path, "two-instances")
    assert two["verdict"] == "reproduced"
    digest = [o for o in two["details"]["occurrences"] if o["task"] == "daily-digest"]
    assert [(o["executed"], o["emails"]) for o in digest] == [(2, 2)]
    assert {e["instance"] for e in digest[0]["executions"]} == {"a", "b"}
    publish = [e for e in two["details"]["events"] if e["event"] == "entry.publish"]
    assert [e["deliveries"] for e in publish] == [2]
    assert two["fire_latency_p95_ms"]["daily-digest"] < 5000

    race = result(tmp_path, "boot-race")
    assert race["verdict"] == "reproduced"
    assert (tmp_path / "r" / "latest" / "index.html").exists()
    assert processes_under(tmp_path) == []


@pytest.mark.postgres
def test_reproduce_on_postgresql(tmp_path: Path) -> None:
    done = clusterproof(
        tmp_path, "--suite", "reproduce", "--database", postgres_server_url()
    )
    assert done.returncode == 0, done.stderr
    two = result(tmp_path, "two-instances")
    assert two["database"] == "postgresql"
    assert two["claims"] and all(claim["held"] for claim in two["claims"])
    race = result(tmp_path, "boot-race")
    failed = [i for i in race["instances"] if i["error"]]
    runs = max(m["runs"] for m in race["details"]["migrations"])
    assert failed or runs >= 2
    assert processes_under(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "three-instances"], "unknown scenario 'three-instances'"),
        (
            ["--database", "postgresql://postgres@127.0.0.1:1/postgres"],
            "is unreachable .*start PostgreSQL or fix --database",
        ),
        (["--database", "mysql://root@127.0.0.1/test"], "must be a PostgreSQL URL"),
        (["--instances", "0"], "--instances must be a whole number from 2 to 16"),
        (["--instances", "1"], r"\(a duplicate needs two instances\), got 1"),
        (["--instances", "abc"], "from 2 to 16, got 'abc'"),
        (
            ["--scenario", "cluster-workers"],
            "scenario 'cluster-workers' belongs to the verify-cluster suite, "
            "not reproduce; run it with nox -s verify-cluster",
        ),
    ],
)
def test_bad_input_exits_2_before_running(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = clusterproof(tmp_path, "--suite", "reproduce", *args)
    assert done.returncode == 2
    assert re.search(message, " ".join(done.stderr.split()))
    assert not (tmp_path / "r" / "latest").exists()


def test_an_unwritable_reports_folder_exits_2(tmp_path: Path) -> None:
    (tmp_path / "r").write_text("not a folder")
    done = clusterproof(tmp_path, "--suite", "reproduce")
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "cannot create a run folder in r (Not a directory)" in message
    assert "choose a writable folder with --reports" in message
    assert "Traceback" not in done.stderr


def test_instances_is_refused_for_the_gate(tmp_path: Path) -> None:
    done = clusterproof(tmp_path, "--suite", "verify-cluster", "--instances", "2")
    assert done.returncode == 2
    assert "--instances applies to the reproduce suite only" in done.stderr
    assert not (tmp_path / "r").exists()


def test_a_reproduce_scenario_cannot_pass_the_gate(tmp_path: Path) -> None:
    done = clusterproof(
        tmp_path, "--suite", "verify-cluster", "--scenario", "two-instances"
    )
    assert done.returncode == 2
    assert "belongs to the reproduce suite" in " ".join(done.stderr.split())
    assert not (tmp_path / "r").exists()


def test_an_empty_scenario_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "none").mkdir()
    done = clusterproof(
        tmp_path, "--suite", "reproduce", "--scenarios", str(tmp_path / "none"),
        "--scenario", "two-instances",
    )  # fmt: skip
    assert done.returncode == 2
    assert f"{tmp_path / 'none'} has no .toml files" in " ".join(done.stderr.split())


def test_broken_scenario_file_exits_2(tmp_path: Path) -> None:
    folder = scenario_dir(tmp_path, "boot-race", {"instances = 2": "instances = -2"})
    done = clusterproof(tmp_path, "--suite", "reproduce", "--scenarios", str(folder))
    assert done.returncode == 2
    assert "topology.instances" in done.stderr


def test_instance_that_dies_at_boot_exits_2_and_leaves_nothing(tmp_path: Path) -> None:
    bad_setting = 'env = { CLUSTERPROOF_SERVER__CLUSTER__WORKERS = "abc" }'
    folder = scenario_dir(
        tmp_path,
        "two-instances",
        {'start = "staggered"': f'start = "staggered"\n{bad_setting}'},
    )
    done = clusterproof(tmp_path, "--suite", "reproduce", "--scenarios", str(folder))
    assert done.returncode == 2, done.stderr
    assert "stopped at start instances: instance a exited during boot" in " ".join(
        done.stderr.split()
    )
    broken = result(tmp_path, "two-instances")
    assert broken["verdict"] == "error"
    assert broken["claims"] == []
    assert processes_under(tmp_path) == []


def test_a_fault_of_the_harness_exits_2_not_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_report(*args: object, **kwargs: object) -> Path:
        raise RuntimeError("template bug")

    monkeypatch.setattr(cli, "write_run_report", broken_report)
    handlers = {signum: signal.getsignal(signum) for signum in cli.STOP_SIGNALS}
    try:
        code = cli.main(
            ["run", "--suite", "reproduce", "--scenario", "boot-race",
             "--reports", str(tmp_path / "r")]
        )  # fmt: skip
    finally:
        # main() takes the stop signals over; give pytest its own back.
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert code == 2
    assert not (tmp_path / "r" / "latest").exists()
    assert processes_under(tmp_path) == []


def test_a_pin_too_close_to_the_fire_time_is_an_error_not_a_loss(
    tmp_path: Path,
) -> None:
    folder = scenario_dir(
        tmp_path,
        "two-instances",
        {'pin = "2026-01-01T08:59:49Z"': 'pin = "2026-01-01T08:59:58Z"'},
    )
    done = clusterproof(tmp_path, "--suite", "reproduce", "--scenarios", str(folder))
    assert done.returncode == 2, done.stderr
    message = " ".join(done.stderr.split())
    assert re.search(
        r"stopped at start instances: instance [ab] was ready at pinned "
        r"09:00:0\d\.\d\d, too late for daily-digest at 09:00:00 .* set clock\.pin "
        r"at least \d+ s earlier",
        message,
    ), message
    assert result(tmp_path, "two-instances")["claims"] == []
    assert processes_under(tmp_path) == []


@pytest.mark.parametrize("which", ["instance", "sink"])
def test_port_in_use_exits_2(tmp_path: Path, which: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        edit = (
            {"instances = 2": f"instances = 2\nbase_port = {port}"}
            if which == "instance"
            else {"[target]": f"[sinks]\nsmtp_port = {port}\n\n[target]"}
        )
        folder = scenario_dir(tmp_path, "boot-race", edit)
        done = clusterproof(
            tmp_path, "--suite", "reproduce", "--scenarios", str(folder)
        )
    assert done.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in " ".join(done.stderr.split())
    assert processes_under(tmp_path) == []


@pytest.mark.parametrize(
    ("signum", "named"),
    [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGHUP")],
)
def test_a_stop_signal_stops_every_instance(
    tmp_path: Path, signum: int, named: str
) -> None:
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            "--suite",
            "reproduce",
            "--scenario",
            "two-instances",
            "--reports",
            "r",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        # The run itself works in tmp_path; its instances work in the reports.
        while not processes_under(tmp_path / "r") and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        assert processes_under(tmp_path / "r"), "no instance started"
        # Twice, as an impatient user or nox passing a terminal's signal on
        # does: the second must not cut the teardown short.
        run.send_signal(signum)
        time.sleep(0.3)
        run.send_signal(signum)
        output, _ = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 2, output
    assert f"interrupted by {named}" in output
    assert processes_under(tmp_path) == []
    # No latest link: an interrupted run claims nothing; its report says
    # where it stopped.
    assert not (tmp_path / "r" / "latest").exists()
    (written,) = (tmp_path / "r").glob("*/two-instances/result.json")
    error = json.loads(written.read_text())["error"]
    assert error["message"] == f"interrupted by {named}"
    assert error["stage"] in ("start instances", "workload", "cron")
    (page,) = (tmp_path / "r").glob("*/index.html")
    assert f"interrupted by {named}" in page.read_text()


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    assert shutil.which("chromium"), (
        "install Debian's chromium: apt-get install chromium"
    )
    done = clusterproof(tmp_path, "--suite", "reproduce", "--scenario", "two-instances")
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "r" / "latest" / "index.html").resolve()
    dom = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "two-instances" in dom
    assert "duplicated" in dom
    assert "(pid " in dom


def test_the_gate_fails_when_workers_run_cron(tmp_path: Path) -> None:
    """The regression gate can fail: cluster mode with cron on every worker,
    as a naive implementation would run it, breaks the once-per-occurrence
    claims and verify-cluster says which."""
    done = clusterproof(
        tmp_path,
        "--suite",
        "verify-cluster",
        "--scenario",
        "cluster-workers",
        env={"CLUSTERPROOF_FAULTS__CRON_ON_WORKERS": "true"},
    )
    assert done.returncode == 1, done.stderr
    output = " ".join(done.stderr.split())
    assert "claim failed: the digest is mailed once per occurrence" in output
    assert "claim failed: nothing duplicated, nothing lost" in output
    junit = (tmp_path / "r" / "latest" / "junit.xml").read_text()
    assert "the digest is mailed once per occurrence" in junit
    # The runner's measures are figures a claim may name.
    measures = result(tmp_path, "cluster-workers")["measures"]
    assert "serving_processes" in measures
    assert [name for name in measures if metrics.unknown(name, load=False)] == []
    assert "<failure" in junit
    assert processes_under(tmp_path) == []
