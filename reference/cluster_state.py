"""The state of a cluster, as the primary publishes it and /admin/cluster shows it.

Workers are forked processes and cannot see the primary's memory, so the
primary writes each change of its workers to a small JSON file in its run
directory; the path reaches the workers in CLUSTERPROOF_CLUSTER_STATE.
Without that variable the process is not a cluster worker: single mode.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reference.models import iso

STATE_FILE_ENV = "CLUSTERPROOF_CLUSTER_STATE"


class ClusterStateUnavailable(Exception):
    """The primary's state file cannot be read (it is stopping, or gone)."""


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace the file at path with state as JSON, atomically.

    A reader sees the previous state or the new one, never half of one: the
    new state is written to a scratch file beside it, then renamed over it.
    """
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(json.dumps(state))
    os.replace(scratch, path)


def cluster_status(started_at: float, now: float | None = None) -> dict[str, Any]:
    """What GET /admin/cluster answers.

    In single mode: {"mode": "single", "primary_pid": <own pid>, "workers": [],
    ...}, with started_at the time this process's app was built. In a
    cluster worker: the primary's published state, e.g. {"mode": "cluster",
    "primary_pid": 41, "workers": [{"number": 0, "pid": 42, "ready": true}],
    "restarts": 0, "started_at": "2026-01-01T09:00:00Z", "uptime_seconds":
    3.2, "stopping": false}.
    """
    now = time.time() if now is None else now
    path = os.environ.get(STATE_FILE_ENV)
    if not path:
        return _status("single", os.getpid(), [], 0, started_at, now, stopping=False)

    try:
        state = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ClusterStateUnavailable(
            f"cannot read the primary's state file {path!r}: {exc}"
        ) from None
    ready = set(state["ready"])
    workers = [
        {"number": int(number), "pid": pid, "ready": int(number) in ready}
        for number, pid in sorted(state["workers"].items(), key=lambda kv: int(kv[0]))
    ]
    return _status(
        "cluster",
        state["primary_pid"],
        workers,
        state["restarts"],
        state["started_at"],
        now,
        stopping=state["stopping"],
    )


def _status(
    mode: str,
    primary_pid: int,
    workers: list[dict[str, Any]],
    restarts: int,
    started_at: float,
    now: float,
    *,
    stopping: bool,
) -> dict[str, Any]:
    return {
        "mode": mode,
        "primary_pid": primary_pid,
        "workers": workers,
        "restarts": restarts,
        "started_at": iso(datetime.fromtimestamp(started_at, UTC)),
        "uptime_seconds": round(max(now - started_at, 0.0), 3),
        "stopping": stopping,
    }
