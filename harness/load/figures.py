"""From one Locust run to the figures of a point, and from the points of a
sweep to the metrics the scenario's claims are judged on.

Metric names (for claims):
    rps, p50_ms, p95_ms, p99_ms, error_rate, idle_workers
        lists over every run of our server (cluster off and on, the roles
        instances), so one bad run is enough to break a threshold
    balance                     list over runs of cluster mode with 2+ workers
    rps[<setup>] ... cpu_s_per_1k[<setup>], balance[<setup>]
                                one setup, the median of its rounds
    scaling(N)                  rps of cluster N workers / rps of cluster off
    peer_throughput_ratio[N], peer_p95_ratio[N] (and lists without [N])
                                cluster N workers over the best peer with N
    cpu_per_request_ratio       CPU per request, cluster 1 worker / cluster off
    generator_saturated         runs where Locust, not the server, was the limit
    content_api_scaling         /api rps of one full instance plus content-api
                                instances, over one full instance alone
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from harness.load.generator import Run
from harness.load.setups import PEERS, Setup

# Figures of one setup: the median of its rounds, which one round disturbed
# by the machine cannot move far.
PER_ROUND = ("rps", "p50_ms", "p95_ms", "p99_ms", "error_rate", "cpu_s_per_1k")


def point_figures(
    setup: Setup, round_number: int, run: Run, serving: list[int]
) -> dict[str, Any]:
    """One run's figures; requests per worker come from x-clusterproof-pid."""
    stats = run.stats
    per_worker = {str(pid): run.served.get(str(pid), 0) for pid in serving}
    counts = list(per_worker.values())
    idle = sum(1 for count in counts if count == 0)
    return {
        "setup": setup.label,
        "kind": setup.kind,
        "workers": setup.workers,
        "round": round_number,
        "requests": stats.requests,
        "failures": stats.failures,
        "error_rate": round(stats.error_rate, 6),
        "rps": round(stats.rps, 1),
        "p50_ms": stats.p50_ms,
        "p95_ms": stats.p95_ms,
        "p99_ms": stats.p99_ms,
        "max_ms": round(stats.max_ms, 1),
        "server_cpu_seconds": round(run.server_cpu_seconds, 3),
        "cpu_s_per_1k": round(run.server_cpu_seconds / stats.requests * 1000, 4),
        "server_peak_rss_mb": round(run.server_peak_rss_mb, 1),
        "generator_cpu_seconds": round(run.generator_cpu_seconds, 3),
        "generator_busiest_percent": round(run.generator_busiest_share * 100, 1),
        "generator_saturated": run.generator_saturated,
        "per_worker": per_worker,
        # Answered by a process that was not a worker when the load began
        # (a respawned worker, a primary that serves): named, not hidden.
        "other_processes": {
            pid: count for pid, count in run.served.items() if pid not in per_worker
        },
        "idle_workers": idle,
        "balance": round(max(counts) / min(counts), 3) if counts and not idle else None,
        "wall_seconds": round(run.wall_seconds, 2),
    }


def by_setup(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per setup, in first-run order, the median of its rounds."""
    rows: dict[str, dict[str, Any]] = {}
    for point in points:
        row = rows.setdefault(
            point["setup"],
            {k: point[k] for k in ("setup", "kind", "workers")} | {"runs": []},
        )
        row["runs"].append(point)
    for row in rows.values():
        runs = row.pop("runs")
        row["rounds"] = len(runs)
        for key in PER_ROUND:
            row[key] = round(statistics.median(run[key] for run in runs), 4)
        # How far the rounds of one setup disagree: a ratio between two
        # setups that differs from 1 by less than this is within the noise.
        rps = [run["rps"] for run in runs]
        row["rps_spread"] = _ratio(max(rps) - min(rps), row["rps"])
        balances = [run["balance"] for run in runs]
        row["balance"] = None if None in balances else max(balances)
        row["idle_workers"] = max(run["idle_workers"] for run in runs)
        row["generator_saturated"] = any(run["generator_saturated"] for run in runs)
        row["generator_busiest_percent"] = max(
            run["generator_busiest_percent"] for run in runs
        )
        # Requests per worker of the last round: pids differ between rounds.
        row["per_worker"] = runs[-1]["per_worker"]
        row["server_peak_rss_mb"] = max(run["server_peak_rss_mb"] for run in runs)
    return list(rows.values())


def peer_rows(setups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per worker count: our cluster mode beside the best peer (highest rps)."""
    ours = {row["workers"]: row for row in setups if row["kind"] == "cluster"}
    rows = []
    for workers, row in sorted(ours.items()):
        peers = [s for s in setups if s["kind"] in PEERS and s["workers"] == workers]
        if not peers:
            continue
        best = max(peers, key=lambda peer: peer["rps"])
        rows.append(
            {
                "workers": workers,
                "ours_rps": row["rps"],
                "ours_p95_ms": row["p95_ms"],
                "best_peer": best["setup"],
                "best_rps": best["rps"],
                "best_p95_ms": best["p95_ms"],
                "peers": {peer["setup"]: peer["rps"] for peer in peers},
                "throughput_ratio": _ratio(row["rps"], best["rps"]),
                "p95_ratio": _ratio(row["p95_ms"], best["p95_ms"]),
            }
        )
    return rows


def metrics(
    points: list[dict[str, Any]],
    setups: list[dict[str, Any]],
    peers: list[dict[str, Any]],
) -> dict[str, Any]:
    """Every figure a claim may name (see the module docstring)."""
    ours = [p for p in points if p["kind"] not in PEERS]
    found: dict[str, Any] = {
        key: [p[key] for p in ours]
        for key in ("rps", "p50_ms", "p95_ms", "p99_ms", "error_rate", "idle_workers")
    }
    # An idle worker makes balance unbounded: a threshold on it must fail.
    found["balance"] = [
        math.inf if p["balance"] is None else p["balance"]
        for p in ours
        if p["kind"] == "cluster" and p["workers"] >= 2
    ]
    found["generator_saturated"] = sum(1 for p in points if p["generator_saturated"])
    for row in setups:
        for key in (*PER_ROUND, "balance"):
            value = row[key]
            found[f"{key}[{row['setup']}]"] = math.inf if value is None else value
    rps = {row["setup"]: row["rps"] for row in setups}
    cpu = {row["setup"]: row["cpu_s_per_1k"] for row in setups}
    for row in setups:
        if row["kind"] == "cluster" and "cluster-off" in rps:
            found[f"scaling({row['workers']})"] = _ratio(row["rps"], rps["cluster-off"])
    if "cluster-1" in cpu and "cluster-off" in cpu:
        found["cpu_per_request_ratio"] = _ratio(cpu["cluster-1"], cpu["cluster-off"])
    for row in peers:
        found[f"peer_throughput_ratio[{row['workers']}]"] = row["throughput_ratio"]
        found[f"peer_p95_ratio[{row['workers']}]"] = row["p95_ratio"]
    if peers:
        found["peer_throughput_ratio"] = [row["throughput_ratio"] for row in peers]
        found["peer_p95_ratio"] = [row["p95_ratio"] for row in peers]
    combined = [label for label in rps if label.startswith("full+")]
    if combined and "full" in rps:
        found["content_api_scaling"] = _ratio(rps[combined[0]], rps["full"])
    return {key: value for key, value in found.items() if value is not None}


def _ratio(top: float, bottom: float) -> float | None:
    return round(top / bottom, 4) if bottom else None


def json_safe(metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics for result.json: JSON has no infinity, so it becomes null."""

    def plain(value: Any) -> Any:
        if isinstance(value, list):
            return [plain(item) for item in value]
        return None if isinstance(value, float) and math.isinf(value) else value

    return {key: plain(value) for key, value in metrics.items()}
