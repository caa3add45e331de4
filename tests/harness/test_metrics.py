"""The list of metrics a claim may name: it refuses typos and names what is
known, and it knows every figure the checker, the runner's measures and a
load sweep produce, so that no claim on a real figure is refused."""

from __future__ import annotations

import re

import pytest
from hypothesis import given

from harness import metrics
from harness.checker import Expected, Ledgers, check
from harness.faults import Replacements, Shutdown
from tests.harness.test_checker import random_run
from tests.harness.test_load_thresholds import point, sweep, sweep_metrics

TASK_NAMES = ["daily-digest", "publish-scheduled"]


@pytest.mark.parametrize(
    ("metric", "load", "message"),
    [
        ("sms_per_occurrence[daily-digest]", False, "unknown metric 'sms_per_"),
        ("duplicate", False, "a claim may name .*duplicates"),
        ("deliveries_per_event[entry.bogus]", False, "the event must be one of entry"),
        ("emails_per_occurrence[daily-digets]", False, "the task must be one of daily"),
        ("scaling(2)", False, r"unknown metric 'scaling\(2\)'"),
        ("duplicates", True, r"unknown metric 'duplicates'; .*scaling\(N\)"),
        ("rsp[cluster-2]", True, r"unknown metric 'rsp\[cluster-2\]'"),
        ("rps[clustr-2]", True, r"the setup must be like cluster-off, cluster-2"),
        ("peer_p95_ratio[two]", True, "the worker count must be like a number"),
        ("scaling(x)", True, "the argument must be a number of workers"),
    ],
)
def test_a_metric_no_run_produces_is_refused_naming_the_known_ones(
    metric: str, load: bool, message: str
) -> None:
    problem = metrics.unknown(metric, load=load, tasks=TASK_NAMES)
    assert problem is not None
    assert re.search(message, problem), problem


@given(random_run())
def test_every_figure_of_the_checker_is_known(drawn: tuple[Ledgers, Expected]) -> None:
    for name in check(*drawn).metrics:
        assert metrics.unknown(name, load=False, tasks=TASK_NAMES) is None, name


def test_every_measure_of_faults_is_known() -> None:
    measures = Replacements([0.2, 0.3]).metrics() | Shutdown(in_flight=2).metrics()
    for name in measures:
        assert metrics.unknown(name, load=False) is None, name


def test_every_figure_of_a_load_sweep_is_known() -> None:
    points = sweep() + [
        point("full", "roles", 0, 300.0),
        point("full+1-content-api", "roles", 1, 550.0),
    ]
    found = sweep_metrics(points)
    assert "scaling(2)" in found and "content_api_scaling" in found
    for name in found:
        assert metrics.unknown(name, load=True) is None, name
