"""Equivalence: the same request corpus and schedule against several
configurations (cluster off, cluster with 1 worker, with 4) must give the same
statuses and bodies and the same sink ledgers.

What legitimately differs between runs is set aside before comparing: ids,
timestamps the server stamps, the sink's address and which process served a
request. The sink
ledgers are compared as sorted lists, since deliveries from concurrent
runners arrive in any order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.runner import Options, Progress, ScenarioRun, write_result
from harness.scenario import Scenario
from harness.sinks import read_ledger

# Ids, stamps, and the url of the run's own sink (a fresh port each run).
_VOLATILE_KEYS = {"id", "created_at", "updated_at", "url"}
_ENTRY_PATH = re.compile(r"/(\d+)(?=/|$)")
# Shown per scenario in the report; the rest are counted.
MISMATCHES_SHOWN = 10


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VOLATILE_KEYS}
    if isinstance(value, list):
        return [_stable(item) for item in value]
    return value


def responses(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The workload's responses without ids, stamps or serving process."""
    return [
        {
            "request": f"{r['method']} {_ENTRY_PATH.sub('/{id}', r['path'])}",
            "status": r.get("status"),
            "body": _stable(r.get("body")),
        }
        for r in records
    ]


def sink_ledgers(folder: Path) -> dict[str, list[str]]:
    emails = sorted(
        f"{m.get('task')} {m.get('occurrence')} {m.get('subject')}"
        for m in read_ledger(folder / "smtp.jsonl")
    )
    webhooks = sorted(
        f"{w.get('event')} {w.get('model')} v{w.get('entry_version')}"
        for w in read_ledger(folder / "http.jsonl")
    )
    return {"emails": emails, "webhooks": webhooks}


def differences(
    name: str, baseline: list[Any], observed: list[Any], what: str
) -> list[dict[str, Any]]:
    """One row per position where the two lists disagree."""
    rows = []
    for index in range(max(len(baseline), len(observed))):
        left = baseline[index] if index < len(baseline) else None
        right = observed[index] if index < len(observed) else None
        if left != right:
            rows.append(
                {
                    "variant": name,
                    "what": what,
                    "position": index,
                    "baseline": left,
                    "observed": right,
                }
            )
    return rows


# Counts of failures add up across variants; other figures take the largest.
_ADDED = {"duplicates", "lost", "failed_requests", "occurrence_duplicates"}


def combine(all_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics of several runs as one: lists are concatenated."""
    combined: dict[str, Any] = {}
    for key in {key for metrics in all_metrics for key in metrics}:
        values = [metrics[key] for metrics in all_metrics if key in metrics]
        if all(isinstance(value, list) for value in values):
            combined[key] = [item for value in values for item in value]
        elif all(isinstance(value, int | float) for value in values):
            combined[key] = sum(values) if key in _ADDED else max(values)
        else:
            combined[key] = values[0]
    return combined


class EquivalenceRun:
    """Runs the scenario once per variant, then compares every variant with
    the first."""

    def __init__(
        self, scenario: Scenario, folder: Path, options: Options, progress: Progress
    ) -> None:
        self.scenario = scenario
        self.folder = folder
        self.options = options
        self.progress = progress

    def run(self) -> dict[str, Any]:
        result = self._compare()
        write_result(self.folder, result)
        return result

    def _compare(self) -> dict[str, Any]:
        runs = []
        for variant in self.scenario.variants:
            slug = re.sub(r"[^a-z0-9]+", "-", variant.name.lower()).strip("-")
            run = ScenarioRun(
                self.scenario, self.folder / slug, self.options, self.progress, variant
            )
            runs.append((variant.name, slug, run, run.run()))

        failed = [(name, result) for name, _, _, result in runs if "error" in result]
        if failed:
            name, result = failed[0]
            combined = runs[0][3] | {
                "verdict": "error",
                "error": {
                    "stage": f"{name}: {result['error']['stage']}",
                    "message": result["error"]["message"],
                },
                "claims": [],
            }
            return combined | {"variants": self._variant_rows(runs)}

        base_name, base_slug, base_run, _ = runs[0]
        base_responses = responses(
            base_run.workload.records if base_run.workload else []
        )
        base_sinks = sink_ledgers(self.folder / base_slug)
        mismatches: list[dict[str, Any]] = []
        for name, slug, run, _ in runs[1:]:
            records = run.workload.records if run.workload else []
            mismatches += differences(
                name, base_responses, responses(records), "response"
            )
            sinks = sink_ledgers(self.folder / slug)
            for what in ("emails", "webhooks"):
                mismatches += differences(name, base_sinks[what], sinks[what], what)

        metrics = combine([run.metrics for _, _, run, _ in runs])
        metrics.update(
            equivalence_mismatches=len(mismatches),
            compared_responses=len(base_responses),
        )
        baseline = runs[0][3] | {"description": self.scenario.description}
        result = base_run.judge(baseline, metrics)
        return result | {
            "folder": f"{self.scenario.name}/{base_slug}",
            "measures": {
                "baseline": base_name,
                "equivalence_mismatches": len(mismatches),
                "compared_responses": len(base_responses),
            },
            "variants": self._variant_rows(runs),
            "mismatches": mismatches[:MISMATCHES_SHOWN],
        }

    @staticmethod
    def _variant_rows(
        runs: list[tuple[str, str, ScenarioRun, dict[str, Any]]],
    ) -> list[dict[str, Any]]:
        keys = ("verdict", "executions", "duplicates", "lost", "emails", "webhooks")
        return [
            {"name": name, "folder": slug, **{k: result.get(k) for k in keys}}
            for name, slug, _, result in runs
        ]
