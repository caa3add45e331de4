from __future__ import annotations

import os
from pathlib import Path

import pytest

from reference.cpus import available_cpus, cgroup_cpu_quota


@pytest.fixture
def affinity() -> int:
    return len(os.sched_getaffinity(0))


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_v2_quota_rounds_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    write(tmp_path / "cpu.max", "150000 100000\n")

    assert cgroup_cpu_quota(tmp_path, None) == 1.5
    assert available_cpus(tmp_path, None) == 2


def test_v2_max_means_affinity(tmp_path: Path, affinity: int) -> None:
    write(tmp_path / "cpu.max", "max 100000\n")

    assert cgroup_cpu_quota(tmp_path, None) is None
    assert available_cpus(tmp_path, None) == affinity


def test_no_cgroup_files_means_affinity(tmp_path: Path, affinity: int) -> None:
    assert available_cpus(tmp_path / "missing", None) == affinity


def test_affinity_below_quota_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    write(tmp_path / "cpu.max", "400000 100000\n")

    assert available_cpus(tmp_path, None) == 1


def test_tiny_quota_still_gives_one(tmp_path: Path) -> None:
    write(tmp_path / "cpu.max", "10000 100000\n")

    assert available_cpus(tmp_path, None) == 1


@pytest.mark.parametrize("directory", ["cpu", "cpu,cpuacct"])
def test_v1_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, directory: str
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    write(tmp_path / directory / "cpu.cfs_quota_us", "250000\n")
    write(tmp_path / directory / "cpu.cfs_period_us", "100000\n")

    assert available_cpus(tmp_path, None) == 3


def test_v1_minus_one_means_affinity(tmp_path: Path, affinity: int) -> None:
    write(tmp_path / "cpu" / "cpu.cfs_quota_us", "-1\n")
    write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000\n")

    assert available_cpus(tmp_path, None) == affinity


def test_limit_on_an_ancestor_cgroup_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    write(tmp_path / "proc_cgroup", "0::/system.slice/app.service\n")
    write(tmp_path / "fs" / "system.slice" / "cpu.max", "300000 100000\n")
    write(tmp_path / "fs" / "system.slice" / "app.service" / "cpu.max", "max 1\n")

    assert available_cpus(tmp_path / "fs", tmp_path / "proc_cgroup") == 3


def test_host_path_missing_in_container_falls_back_to_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cgroup v1 without a cgroup namespace: /proc/self/cgroup names the
    # host's path, but the container's own cgroup is mounted at the root.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    write(tmp_path / "proc_cgroup", "4:cpu,cpuacct:/docker/abc123\n")
    write(tmp_path / "fs" / "cpu,cpuacct" / "cpu.cfs_quota_us", "100000\n")
    write(tmp_path / "fs" / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")

    assert available_cpus(tmp_path / "fs", tmp_path / "proc_cgroup") == 1


def test_malformed_files_are_ignored(tmp_path: Path, affinity: int) -> None:
    write(tmp_path / "cpu.max", "garbage\n")

    assert available_cpus(tmp_path, None) == affinity


def test_this_host() -> None:
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)
