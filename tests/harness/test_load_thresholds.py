"""Load thresholds: k6-like claims in scenario files, evaluated over the
figures of a sweep, each with its observed value."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from harness.claims import ClaimError, evaluate, parse_claim
from harness.load import figures
from harness.load.sweep import plan
from harness.scenario import (
    SCENARIO_DIR,
    Load,
    LoadScenario,
    ScenarioError,
    load,
    suite,
)


def point(setup: str, kind: str, workers: int, rps: float, **extra: Any) -> dict:
    """A point as figures.point_figures writes it, with plausible figures."""
    per_worker = extra.pop("per_worker", {"100": int(rps)})
    counts = list(per_worker.values())
    idle = sum(1 for count in counts if count == 0)
    return {
        "setup": setup,
        "kind": kind,
        "workers": workers,
        "round": 1,
        "rps": rps,
        "p50_ms": 10.0,
        "p95_ms": 40.0,
        "p99_ms": 80.0,
        "error_rate": 0.0,
        "cpu_s_per_1k": 2.0,
        "per_worker": per_worker,
        "idle_workers": idle,
        "balance": None if idle else max(counts) / min(counts),
        "generator_saturated": False,
        "generator_busiest_percent": 20.0,
        "server_peak_rss_mb": 90.0,
        **extra,
    }


def sweep_metrics(points: list[dict]) -> dict[str, Any]:
    setups = figures.by_setup(points)
    return figures.metrics(points, setups, figures.peer_rows(setups))


def sweep(cluster_2_rps: float = 600.0, idle_worker: bool = False) -> list[dict]:
    workers = {"201": 0 if idle_worker else 310, "202": 290}
    return [
        point("cluster-off", "cluster-off", 1, 400.0),
        point("cluster-1", "cluster", 1, 390.0, cpu_s_per_1k=2.2),
        point("cluster-2", "cluster", 2, cluster_2_rps, per_worker=workers),
        point("gunicorn-2", "gunicorn", 2, 610.0, p95_ms=38.0),
        point("uvicorn-2", "uvicorn", 2, 580.0),
    ]


@pytest.mark.parametrize(
    ("text", "metric"),
    [
        ("p95_ms < 200", "p95_ms"),
        ("error_rate == 0", "error_rate"),
        ("scaling(2) >= 1.4", "scaling(2)"),
        ("scaling( 2 ) >= 1.4", "scaling(2)"),
        ("rps[cluster-2] > 100", "rps[cluster-2]"),
    ],
)
def test_thresholds_parse(text: str, metric: str) -> None:
    comparison = parse_claim(text).expression
    assert getattr(comparison, "metric", None) == metric


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scaling(2) >=", "expected a number after '>='"),
        ("scaling(2 >= 1.4", "expected an operator"),
        ("p95_ms << 200", "expected a number after '<'"),
    ],
)
def test_bad_thresholds_are_refused_with_what_was_expected(
    text: str, message: str
) -> None:
    with pytest.raises(ClaimError, match=message):
        parse_claim(text)


def test_thresholds_that_hold_show_their_figures() -> None:
    metrics = sweep_metrics(sweep())
    scaling = evaluate("scaling(2) >= 1.4", metrics)
    assert scaling.held
    assert scaling.observed == "scaling(2) = 1.5"
    errors = evaluate("error_rate == 0 and p95_ms < 200", metrics)
    assert errors.held
    assert "p95_ms = [40, 40, 40]" in errors.observed


def test_a_failing_threshold_fails_and_shows_the_figure() -> None:
    metrics = sweep_metrics(sweep(cluster_2_rps=480.0))
    result = evaluate("scaling(2) >= 1.4", metrics, name="2 workers scale")
    assert not result.held
    assert result.observed == "scaling(2) = 1.2"
    peers = evaluate("peer_throughput_ratio >= 0.97", metrics)
    assert not peers.held
    assert peers.observed == "peer_throughput_ratio = [0.7869]"


def test_peer_ratios_compare_with_the_best_peer() -> None:
    metrics = sweep_metrics(sweep())
    assert metrics["peer_throughput_ratio[2]"] == round(600 / 610, 4)
    assert metrics["peer_p95_ratio[2]"] == round(40 / 38, 4)
    assert metrics["cpu_per_request_ratio"] == 1.1
    assert not evaluate("cpu_per_request_ratio <= 1.05", metrics).held


def test_an_idle_worker_breaks_balance_and_idle_workers() -> None:
    metrics = sweep_metrics(sweep(idle_worker=True))
    assert metrics["balance"] == [math.inf]
    assert not evaluate("balance <= 1.3", metrics).held
    assert not evaluate("idle_workers == 0", metrics).held
    assert figures.json_safe(metrics)["balance"] == [None]


def test_a_threshold_on_something_not_measured_fails() -> None:
    points = [p for p in sweep() if p["kind"] not in ("gunicorn", "uvicorn")]
    result = evaluate("peer_throughput_ratio >= 0.97", sweep_metrics(points))
    assert not result.held
    assert "was not measured" in result.observed


def test_rounds_alternate_their_order() -> None:
    rounds = plan(Load(workers_max=2, peers=["gunicorn"], rounds=3), cpus=8)
    labels = [[setup.label for setup in r] for r in rounds]
    assert labels[0] == ["cluster-off", "cluster-1", "gunicorn-1", "cluster-2",
                         "gunicorn-2"]  # fmt: skip
    assert labels[1] == labels[0][::-1]
    assert labels[2] == labels[0]


def test_workers_max_0_sweeps_the_cpus() -> None:
    (only,) = plan(Load(cluster_off=False), cpus=3)
    assert [setup.label for setup in only] == ["cluster-1", "cluster-2", "cluster-3"]


def test_shipped_load_scenarios_load() -> None:
    sweep_file = load(SCENARIO_DIR / "load-sweep.toml")
    assert isinstance(sweep_file, LoadScenario)
    assert sweep_file.load.peers == ["gunicorn", "uvicorn"]
    smoke = [s for s in suite("verify-cluster") if isinstance(s, LoadScenario)]
    assert [s.name for s in smoke] == ["load-smoke"]


LOAD_FILE = """
name = "x"
suite = "load"
description = "d"

[load]
{load}

[[claims]]
name = "c"
check = "{check}"
"""


@pytest.mark.parametrize(
    ("table", "check", "message"),
    [
        ("users = 0", "error_rate == 0", r"load.users: .*greater than or equal to 1"),
        ("users = -4", "error_rate == 0", r"load.users"),
        ("duration = 1", "error_rate == 0", r"load.duration: .*3"),
        ("mix = 'sideways'", "error_rate == 0", r"load.mix"),
        ("", "scaling(2) >=", r"claim 'c': .*expected a number"),
    ],
)
def test_bad_load_scenarios_are_refused(
    tmp_path: Path, table: str, check: str, message: str
) -> None:
    path = tmp_path / "x.toml"
    path.write_text(LOAD_FILE.format(load=table, check=check))
    with pytest.raises(ScenarioError, match=message):
        load(path)


def test_a_setup_row_is_the_median_of_its_rounds() -> None:
    rounds = [point("cluster-2", "cluster", 2, rps) for rps in (300.0, 310.0, 90.0)]
    (row,) = figures.by_setup(rounds)
    assert row["rounds"] == 3
    # The disturbed third round does not drag the row down as a mean would.
    assert row["rps"] == 300.0
    assert row["rps_spread"] == round((310 - 90) / 300, 4)


def test_a_failing_roles_point_breaks_the_error_threshold() -> None:
    points = sweep() + [point("content-api", "roles", -1, 300.0, error_rate=0.02)]
    result = evaluate("error_rate == 0", sweep_metrics(points))
    assert result.held is False
    assert "0.02" in result.observed
