"""The figures a claim may name, checked when a scenario file is read.

Without this list a misspelt metric is found only after the run, where it
reads as a claim that did not hold: in the reproduce suite, as a bug that
did not reproduce. A name is plain (`duplicates`), keyed by a task, an event
or a setup (`deliveries_per_event[entry.publish]`), or given an argument
(`scaling(2)`).
"""

from __future__ import annotations

import re
from collections.abc import Collection

from harness.workload import ALL_EVENTS

# A scenario run: the checker's figures, then the runner's measures of the
# traffic, the faults it injected and the shutdown it watched.
SCENARIO = frozenset(
    {
        "occurrences",
        "executions",
        "duplicates",
        "lost",
        "occurrence_duplicates",
        "occurrences_lost",
        "event_duplicates",
        "events_lost",
        "emails",
        "webhooks",
        "webhook_attempts",
        "invalid_signatures",
        "migration_runs",
        "max_migration_runs_per_revision",
        "failed_instances",
        "requests",
        "failed_requests",
        "serving_processes",
        "idle_workers",
        "worker_kills",
        "replacement_seconds",
        "replacement_seconds_median",
        "in_flight_requests",
        "in_flight_failed",
        "shutdown_exit_code",
        "shutdown_seconds",
        "processes_left",
        "port_free",
        "equivalence_mismatches",
        "compared_responses",
    }
)
# Measured by the traffic stage, which runs only with writes or faults.
TRAFFIC = frozenset(
    {"requests", "failed_requests", "serving_processes", "idle_workers"}
)
# Keyed scenario figures, and what the key names.
SCENARIO_KEYED = {
    "executions_per_occurrence": "task",
    "emails_per_occurrence": "task",
    "fire_latency_p95_ms": "task",
    "deliveries_per_event": "event",
}

# A load run (harness.load.figures).
LOAD = frozenset(
    {
        "rps",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "error_rate",
        "idle_workers",
        "balance",
        "generator_saturated",
        "cpu_per_request_ratio",
        "peer_throughput_ratio",
        "peer_p95_ratio",
        "content_api_scaling",
    }
)
LOAD_KEYED = {
    "rps": "setup",
    "p50_ms": "setup",
    "p95_ms": "setup",
    "p99_ms": "setup",
    "error_rate": "setup",
    "cpu_s_per_1k": "setup",
    "balance": "setup",
    "peer_throughput_ratio": "worker count",
    "peer_p95_ratio": "worker count",
}
LOAD_ARGUMENT = frozenset({"scaling"})
# The keys a load run can produce (harness.load.setups labels its setups so).
LOAD_KEYS = {
    "setup": re.compile(
        r"cluster-off|(?:cluster|gunicorn|uvicorn)-\d+|content-api|full"
        r"|full\+\d+-content-api"
    ),
    "worker count": re.compile(r"\d+"),
}
LOAD_KEY_EXAMPLES = {
    "setup": "cluster-off, cluster-2, gunicorn-2, uvicorn-2, content-api, full, "
    "full+1-content-api",
    "worker count": "a number of workers, like 2",
}

_PARTS = re.compile(r"(?P<base>\w+)(?:\[(?P<key>[^\]]+)\]|\((?P<argument>[^)]*)\))?$")


def unknown(metric: str, *, load: bool, tasks: Collection[str] = ()) -> str | None:
    """Why a metric is not a figure this kind of run produces, or None.

    unknown("duplicates", load=False) -> None
    unknown("deliveries_per_event[entry.bogus]", load=False)
        -> "metric 'deliveries_per_event[entry.bogus]': the event must be ..."
    """
    parts = _PARTS.match(metric)
    if parts is None:
        return f"metric {metric!r} is not a name, name[key] or name(argument)"
    base, key, argument = parts.group("base", "key", "argument")
    plain, keyed, with_argument = (
        (LOAD, LOAD_KEYED, LOAD_ARGUMENT) if load else (SCENARIO, SCENARIO_KEYED, ())
    )

    if key is not None and base in keyed:
        what = keyed[base]
        if what in LOAD_KEYS:
            if LOAD_KEYS[what].fullmatch(key):
                return None
            return (
                f"metric {metric!r}: the {what} must be like {LOAD_KEY_EXAMPLES[what]}"
            )
        allowed = tasks if what == "task" else ALL_EVENTS
        if key not in allowed:
            return (
                f"metric {metric!r}: the {what} must be one of "
                f"{', '.join(allowed) or '(none declared)'}"
            )
        return None
    if argument is not None and base in with_argument:
        if argument.isdigit():
            return None
        return f"metric {metric!r}: the argument must be a number of workers, like 2"
    if key is None and argument is None and base in plain:
        return None

    known = sorted(
        [*plain, *(f"{name}[{what}]" for name, what in keyed.items())]
        + [f"{name}(N)" for name in with_argument]
    )
    return f"unknown metric {metric!r}; a claim may name {', '.join(known)}"
