"""The load generator: Locust, headless, in a process group of its own.

Locust runs as `python -m locust` rather than as a library: it patches the
standard library with gevent when imported, which the harness's threads and
subprocesses must not see. Its CSV statistics stay in the point's folder;
the totals come from the Locust file itself when its users stop, and the
rows Locust appends once a second while it runs drive the progress display.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
# Locust stops its users at the end of -t; anything much later is a hang.
EXIT_SLACK_SECONDS = 30.0
LIST_TIMEOUT_SECONDS = 60.0
# A process of the generator busier than this (share of one core) over the
# run is saturated: the figures then measure Locust, not the server.
SATURATED = 0.9

Progress = Callable[[float, float | None], None]


class LoadError(Exception):
    """The load could not be generated or measured; the message says why."""


@dataclass(frozen=True)
class LoadShape:
    mix: str
    users: int
    spawn_rate: float
    duration: float
    seed: int
    processes: int


@dataclass
class Meter:
    """CPU and memory of process trees, from psutil readings.

    CPU times are cumulative per process; the last reading of each pid is
    kept, so a process that exits between readings still counts what it used
    up to its last reading.
    """

    roots: list[int]
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    started_at: float = 0.0
    read_at: float = 0.0

    def start(self) -> None:
        self.first = self._read()
        self.last = dict(self.first)
        self.started_at = self.read_at = time.monotonic()

    def sample(self) -> None:
        self.last.update(self._read())
        self.read_at = time.monotonic()

    @property
    def cpu_seconds(self) -> float:
        return sum(v - self.first.get(pid, 0.0) for pid, v in self.last.items())

    def busiest_share(self) -> float:
        """CPU of the busiest process over the window, as a share of one core."""
        wall = self.read_at - self.started_at
        if wall <= 0 or not self.last:
            return 0.0
        return max(v - self.first.get(pid, 0.0) for pid, v in self.last.items()) / wall

    def pids(self) -> list[int]:
        return [proc.pid for proc in self._processes()]

    def _processes(self) -> list[psutil.Process]:
        found = []
        for pid in self.roots:
            try:
                root = psutil.Process(pid)
                found += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        return found

    def _read(self) -> dict[int, float]:
        seconds: dict[int, float] = {}
        rss = 0
        for proc in self._processes():
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
            except psutil.Error:
                continue
            seconds[proc.pid] = times.user + times.system
        self.peak_rss_mb = max(self.peak_rss_mb, rss / 2**20)
        return seconds


@dataclass(frozen=True)
class Stats:
    """Locust's totals over every request of one run."""

    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def read_stats(path: Path) -> Stats:
    """The totals the Locust file wrote when its users stopped."""
    try:
        figures = json.loads(path.read_text())
    except FileNotFoundError:
        raise LoadError(f"locust wrote no summary ({path} is missing)") from None
    return Stats(
        requests=int(figures["requests"]),
        failures=int(figures["failures"]),
        rps=float(figures["rps"]),
        **{key: float(figures[key] or 0.0) for key in _TIMES},
    )


_TIMES = ("p50_ms", "p95_ms", "p99_ms", "max_ms")


def current_rps(history: Path) -> tuple[float, int] | None:
    """Requests per second and the request count of the last Aggregated row
    Locust appended to <prefix>_stats_history.csv, or None before the first."""
    try:
        lines = history.read_text().splitlines()
    except FileNotFoundError:
        return None
    if len(lines) < 2:
        return None
    header = next(csv.reader([lines[0]]))
    for line in reversed(lines[1:]):
        row = dict(zip(header, next(csv.reader([line])), strict=False))
        if row.get("Name") == "Aggregated":
            return float(row["Requests/s"]), int(row["Total Request Count"])
    return None


def check_locustfile(path: Path) -> None:
    """Load the Locust file in a throwaway Locust process, before anything
    is started: a syntax or import error surfaces here, with its last line."""
    if not path.is_file():
        raise LoadError(f"locust file {path} does not exist; pass an existing file")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(path), "--list"],
            capture_output=True,
            text=True,
            timeout=LIST_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise LoadError(
            f"locust file {path} did not load in {LIST_TIMEOUT_SECONDS:.0f} s"
        ) from None
    if done.returncode != 0 or "User" not in done.stdout + done.stderr:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise LoadError(
            f"locust file {path} has an error: {lines[-1]}; fix it or pass "
            "another with --locustfile"
        )


@dataclass
class Run:
    stats: Stats
    served: dict[str, int]
    server_cpu_seconds: float
    server_peak_rss_mb: float
    generator_cpu_seconds: float
    generator_busiest_share: float
    wall_seconds: float

    @property
    def generator_saturated(self) -> bool:
        return self.generator_busiest_share >= SATURATED


class Generator:
    """One headless Locust run against hosts, measuring the server's process
    trees (server_pids) over the same window."""

    def __init__(
        self,
        folder: Path,
        hosts: list[str],
        shape: LoadShape,
        ids: tuple[int, int],
        locustfile: Path = LOCUSTFILE,
    ) -> None:
        self.folder = folder
        self.hosts = hosts
        self.shape = shape
        self.ids = ids
        self.locustfile = locustfile
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def prefix(self) -> Path:
        return self.folder / "locust"

    @property
    def summary(self) -> Path:
        return self.folder / "summary.json"

    def command(self) -> list[str]:
        shape = self.shape
        command = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(self.locustfile),
            "--headless",
            "--host",
            self.hosts[0],
            "--users",
            str(shape.users),
            "--spawn-rate",
            str(shape.spawn_rate),
            "--run-time",
            f"{shape.duration:g}s",
            "--csv",
            str(self.prefix),
            "--only-summary",
            "--loglevel",
            "WARNING",
            # Failures are figures here, not a reason for Locust to fail.
            "--exit-code-on-error",
            "0",
        ]
        if shape.processes > 1:
            command += ["--processes", str(shape.processes)]
        return command

    def env(self) -> dict[str, str]:
        served = self.folder / "served"
        served.mkdir(parents=True, exist_ok=True)
        return {
            **os.environ,
            "CLUSTERPROOF_LOAD_MIX": self.shape.mix,
            "CLUSTERPROOF_LOAD_SEED": str(self.shape.seed),
            "CLUSTERPROOF_LOAD_IDS": f"{self.ids[0]}-{self.ids[1]}",
            "CLUSTERPROOF_LOAD_HOSTS": ",".join(self.hosts),
            "CLUSTERPROOF_LOAD_SERVED": str(served),
            "CLUSTERPROOF_LOAD_SUMMARY": str(self.summary),
        }

    def run(self, server_pids: list[int], progress: Progress) -> Run:
        """Run Locust to the end; the process group is gone when this returns,
        whatever happened."""
        # Limitation: the server's window runs from Locust's launch to its
        # exit, so about a second of the server at rest (Locust starting) is
        # counted against the requests; at rest it costs next to nothing.
        self.folder.mkdir(parents=True, exist_ok=True)
        server = Meter(server_pids)
        server.start()
        started = time.monotonic()
        with (self.folder / "locust.log").open("wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            generator = self._follow(server, started, progress)
        finally:
            self.stop()
        server.sample()
        code = self.process.returncode
        if code != 0:
            raise LoadError(
                f"locust exited with code {code}: {_last_line(self.folder)}; "
                f"see {self.folder / 'locust.log'}"
            )
        stats = read_stats(self.summary)
        if stats.requests == 0:
            raise LoadError(
                f"no request completed in {self.shape.duration:g} s against "
                f"{', '.join(self.hosts)}; see {self.folder / 'locust.log'}"
            )
        return Run(
            stats=stats,
            served=self._served(),
            server_cpu_seconds=server.cpu_seconds,
            server_peak_rss_mb=server.peak_rss_mb,
            generator_cpu_seconds=generator.cpu_seconds,
            generator_busiest_share=generator.busiest_share(),
            wall_seconds=time.monotonic() - started,
        )

    def _follow(self, server: Meter, started: float, progress: Progress) -> Meter:
        """Sample both sides until Locust exits; the generator's window opens
        at its first statistics row, so its own start-up is not counted."""
        assert self.process is not None
        generator = Meter([self.process.pid])
        history = Path(f"{self.prefix}_stats_history.csv")
        deadline = started + self.shape.duration + EXIT_SLACK_SECONDS
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise LoadError(
                    f"locust did not stop within {EXIT_SLACK_SECONDS:.0f} s of "
                    f"its {self.shape.duration:g} s run; see {self.folder}"
                )
            latest = current_rps(history)
            if latest is not None and not generator.started_at:
                generator.start()
            elif generator.started_at:
                generator.sample()
            server.sample()
            progress(time.monotonic() - started, latest[0] if latest else None)
            time.sleep(0.1 if not generator.started_at else 0.5)
        return generator

    def stop(self) -> None:
        """SIGTERM Locust's group, then SIGKILL what is left of it."""
        if self.process is None:
            return
        group = self.process.pid
        if self.process.poll() is None:
            _signal_group(group, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # Forked load processes may outlive the master for a moment.
        _signal_group(group, signal.SIGKILL)
        self.process.wait()

    def _served(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for path in sorted((self.folder / "served").glob("served-*.json")):
            total.update(json.loads(path.read_text()))
        return dict(total)


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        pass


def _last_line(folder: Path) -> str:
    try:
        lines = (folder / "locust.log").read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "no log"
    meaningful = [line for line in lines if line.strip()]
    return meaningful[-1] if meaningful else "no output"
