"""`clusterproof load` end to end: bad input exits 2 before anything starts,
a short real run writes its report and Locust's CSV files, and no Locust or
server process outlives the command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness.scenario import SCENARIO_DIR

pytestmark = pytest.mark.slow


def clusterproof_load(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Run from tmp_path: every process the command starts inherits a working
    # directory inside it, which is how leftovers are found afterwards.
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "load",
         "--reports", str(tmp_path / "r"), *args],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def processes_under(folder: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cwd"]):
        cwd = proc.info.get("cwd") or ""
        if cwd.startswith(str(folder)) and proc.status() != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--users", "0"], "--users must be a whole number of at least 1, got '0'"),
        (["--users", "-3"], "--users must be a whole number of at least 1"),
        (["--duration", "1"], "--duration must be a number of at least 3, got '1'"),
        (["--load-processes", "0"], "--load-processes must be a whole number"),
        (["--scenario", "nope"], "unknown scenario 'nope'"),
        (["--scenario", "two-instances"], "has no [load] table"),
        (["--database", "postgresql://postgres@127.0.0.1:1/postgres"],
         "is unreachable"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_before_anything_starts(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = clusterproof_load(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    assert message in " ".join(done.stderr.split())
    assert not (tmp_path / "r").exists()
    assert processes_under(tmp_path) == []


def test_an_unwritable_reports_folder_exits_2(tmp_path: Path) -> None:
    (tmp_path / "r").write_text("not a folder")
    done = clusterproof_load(tmp_path)
    assert done.returncode == 2, done.stderr
    assert "cannot create a run folder in" in " ".join(done.stderr.split())
    assert processes_under(tmp_path) == []


def test_a_broken_locust_file_exits_2_and_starts_nothing(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("from locust import FastHttpUser\nraise RuntimeError('oops')\n")
    done = clusterproof_load(tmp_path, "--locustfile", str(broken))
    assert done.returncode == 2, done.stderr
    assert "has an error: RuntimeError: oops" in " ".join(done.stderr.split())
    assert processes_under(tmp_path) == []


def test_a_short_run_writes_the_report_and_leaves_nothing(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    text = (SCENARIO_DIR / "load-smoke.toml").read_text()
    (scenarios / "load-smoke.toml").write_text(
        text.replace("workers_max = 2", "workers_max = 1")
    )
    done = clusterproof_load(
        tmp_path, "--scenarios", str(scenarios), "--scenario", "load-smoke",
        "--duration", "3", "--users", "4", "--load-processes", "2",
    )  # fmt: skip
    # scaling(2) cannot be measured with one worker: the threshold fails, 1.
    assert done.returncode == 1, done.stderr
    assert processes_under(tmp_path) == []
    run = (tmp_path / "r" / "latest").resolve()
    result = json.loads((run / "load-smoke" / "result.json").read_text())
    assert [p["setup"] for p in result["load"]["points"]] == [
        "cluster-off",
        "cluster-1",
    ]
    failed = [c for c in result["claims"] if not c["held"]]
    assert [c["expected"] for c in failed] == ["scaling(2) > 1.0"]
    assert "was not measured" in failed[0]["observed"]
    for figures in result["load"]["points"]:
        assert figures["requests"] > 0 and figures["error_rate"] == 0
        # Two Locust processes ran users; every request is counted once.
        assert sum(figures["per_worker"].values()) == figures["requests"]
    points = run / "load-smoke" / "points"
    assert (points / "01-cluster-off" / "locust_stats.csv").is_file()
    assert len(list((points / "02-cluster-1" / "served").glob("*.json"))) == 2
    html = (run / "index.html").read_text()
    assert 'id="plot-throughput"' in html


def test_the_roles_points_measure_content_api_instances(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    text = (SCENARIO_DIR / "load-smoke.toml").read_text()
    for old, new in {
        "workers_max = 2": "workers_max = 1\nroles = true",
        "cluster_off = true": "cluster_off = false",
    }.items():
        assert old in text
        text = text.replace(old, new)
    (scenarios / "load-smoke.toml").write_text(text)
    done = clusterproof_load(
        tmp_path, "--scenarios", str(scenarios), "--scenario", "load-smoke",
        "--duration", "3", "--users", "4",
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    assert processes_under(tmp_path) == []
    run = (tmp_path / "r" / "latest").resolve()
    roles = json.loads((run / "load-smoke" / "result.json").read_text())["load"][
        "roles"
    ]
    assert roles["available"], roles.get("reason")
    points = {p["setup"]: p for p in roles["points"]}
    assert sorted(points) == ["content-api", "full", "full+1-content-api"]
    for figures in points.values():
        assert figures["requests"] > 0 and figures["error_rate"] == 0
    # One full instance and one content-api instance both took requests.
    assert len(points["full+1-content-api"]["per_worker"]) == 2
    assert sorted(roles["idle"]) == ["content-api", "full"]


def test_sigterm_during_a_point_stops_every_process(tmp_path: Path) -> None:
    run = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "load", "--reports", "r",
         "--scenario", "load-smoke", "--duration", "20"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not processes_under(tmp_path / "r") and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3.0)  # into the first point's load
        run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 2, output
    assert "interrupted by SIGTERM: every process was stopped" in output
    assert processes_under(tmp_path) == []
    (written,) = (tmp_path / "r").glob("*/load-smoke/result.json")
    error = json.loads(written.read_text())["error"]
    assert error == {
        "stage": "cluster-off (round 1, point 1/3)",
        "message": "interrupted by SIGTERM",
    }
