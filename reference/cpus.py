"""How many CPUs this process may use, counting container CPU limits."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")

# cgroup v1 mounts the cpu controller under one of these names, depending on
# the distribution (joined controllers share one directory).
_V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def available_cpus(
    cgroup_root: str | os.PathLike[str] = CGROUP_ROOT,
    proc_self_cgroup: str | os.PathLike[str] | None = PROC_SELF_CGROUP,
) -> int:
    """The number of CPUs this process may keep busy, at least 1.

    It is the smaller of the CPUs in this process's affinity mask and the
    CPU quota of its cgroup, rounded up: a container limited to 1.5 CPUs
    on a 16-CPU host gives 2.

    >>> available_cpus()  # in a container started with --cpus=1.5
    2
    """
    cpus = _affinity_cpus()
    quota = cgroup_cpu_quota(cgroup_root, proc_self_cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cgroup_cpu_quota(
    cgroup_root: str | os.PathLike[str] = CGROUP_ROOT,
    proc_self_cgroup: str | os.PathLike[str] | None = PROC_SELF_CGROUP,
) -> float | None:
    """The CPU quota of this process's cgroup in CPUs, or None if unlimited.

    ``150000 100000`` in cgroup v2 ``cpu.max`` gives 1.5.
    """
    root = Path(cgroup_root)
    memberships = _read_memberships(proc_self_cgroup)

    # A limit set on any ancestor cgroup applies too, so walk from the
    # process's own cgroup up to the mount point and keep the smallest.
    # Directories that do not exist are skipped: without a cgroup namespace
    # /proc/self/cgroup names the host's path while the container sees its
    # own cgroup mounted at the root.
    quotas: list[float] = []
    for directory in _ancestors(root, memberships.get("", "/")):
        quota = _read_v2_quota(directory)
        if quota is not None:
            quotas.append(quota)
    for name in _V1_CPU_DIRS:
        v1_root = root / name
        path = memberships.get(name, memberships.get("cpu", "/"))
        for directory in _ancestors(v1_root, path):
            quota = _read_v1_quota(directory)
            if quota is not None:
                quotas.append(quota)
    return min(quotas, default=None)


def _affinity_cpus() -> int:
    # Limitation: sched_getaffinity is Linux-only; elsewhere every CPU counts.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _read_memberships(
    proc_self_cgroup: str | os.PathLike[str] | None,
) -> dict[str, str]:
    """Map controller name to cgroup path; the v2 hierarchy has name ''.

    ``0::/app`` gives ``{"": "/app"}``; ``4:cpu,cpuacct:/app`` gives
    ``{"cpu": "/app", "cpuacct": "/app", "cpu,cpuacct": "/app"}``.
    """
    if proc_self_cgroup is None:
        return {}
    try:
        text = Path(proc_self_cgroup).read_text()
    except OSError:
        return {}
    memberships: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        memberships[controllers] = path
        for controller in controllers.split(","):
            memberships[controller] = path
    return memberships


def _ancestors(root: Path, cgroup_path: str) -> list[Path]:
    """``root/a/b``, ``root/a`` and ``root`` for the cgroup path ``/a/b``."""
    parts = [part for part in cgroup_path.split("/") if part and part != ".."]
    return [root.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _read_v2_quota(directory: Path) -> float | None:
    try:
        fields = (directory / "cpu.max").read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _quota(fields[0], fields[1])


def _read_v1_quota(directory: Path) -> float | None:
    try:
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _quota(quota, period)


def _quota(quota: str, period: str) -> float | None:
    # -1 (v1) and a malformed file both mean no limit we can honour.
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us
