"""Launching a topology: K instances of a target as process groups, each with
its own port, environment, working directory and log file.

Every instance runs in a session of its own, so stopping it means signalling
one process group: a server that forks workers, or a shell that starts one,
goes down with everything it started. Teardown runs whatever happened before
it (a failed stage, Ctrl-C), and ends with a sweep that SIGKILLs any process
of ours still alive.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import STDOUT, Popen

import httpx
import psutil

STOP_GRACE_SECONDS = 10.0


class TopologyError(Exception):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """Raise unless a server could listen on the port now.

    SO_REUSEADDR, as servers set it: connections a stopped server left in
    TIME_WAIT do not make its port busy, a socket still listening does.
    """
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise TopologyError(
                f"port {port} on {host} is in use; free it or choose another port"
            ) from None


def last_lines(path: Path, count: int = 3) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    return " | ".join(lines[-count:])


@dataclass
class Usage:
    """CPU and memory of one process tree, sampled with psutil."""

    cpu_seconds: float = 0.0
    peak_cpu_percent: float = 0.0
    peak_rss_mb: float = 0.0
    peak_processes: int = 0


@dataclass
class Instance:
    id: str
    command: list[str]
    port: int
    env: dict[str, str]
    workdir: Path
    log_path: Path
    host: str = "127.0.0.1"
    process: Popen[bytes] | None = None
    usage: Usage = field(default_factory=Usage)
    error: str | None = None
    started_at: float = 0.0
    ready_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def exit_code(self) -> int | None:
        return self.process.poll() if self.process else None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Temporary files in the instance's own folder: one killed by SIGKILL
        # (a cluster primary's state file) is left with the run, not in /tmp.
        env = {**os.environ, "TMPDIR": str(self.workdir), **self.env}
        self.started_at = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = Popen(
                self.command,
                cwd=self.workdir,
                env=env,
                stdin=open(os.devnull, "rb"),  # noqa: SIM115 - owned by the child
                stdout=log,
                stderr=STDOUT,
                start_new_session=True,
            )

    def processes(self) -> list[psutil.Process]:
        if self.process is None or self.process.poll() is not None:
            return []
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def signal_group(self, signum: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM the group, wait, then SIGKILL whatever is left of it."""
        if self.process is None:
            return
        stragglers = self.processes()
        self.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        self.signal_group(signal.SIGKILL)
        self.process.wait()
        for proc in stragglers:
            _kill_quietly(proc)


def _kill_quietly(proc: psutil.Process) -> None:
    try:
        proc.kill()
    except psutil.NoSuchProcess:
        pass


class Sampler(threading.Thread):
    """Samples CPU and RSS of every instance's process tree twice a second."""

    def __init__(self, instances: list[Instance], interval: float = 0.5) -> None:
        super().__init__(name="clusterproof-sampler", daemon=True)
        self.instances = instances
        self.interval = interval
        self._stopped = threading.Event()
        self._cpu: dict[tuple[str, int], float] = {}
        # psutil measures cpu_percent between two calls on the same object.
        self._known: dict[int, psutil.Process] = {}

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            for instance in self.instances:
                self.sample(instance)

    def sample(self, instance: Instance) -> None:
        rss = 0
        percent = 0.0
        procs = [self._known.setdefault(p.pid, p) for p in instance.processes()]
        for proc in procs:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
                    percent += proc.cpu_percent()
            except psutil.Error:
                continue
            # cpu_times is cumulative per process; keep the last reading of each
            # pid so a worker that dies still counts what it used.
            self._cpu[(instance.id, proc.pid)] = times.user + times.system
        usage = instance.usage
        usage.cpu_seconds = sum(
            seconds for (owner, _), seconds in self._cpu.items() if owner == instance.id
        )
        usage.peak_cpu_percent = max(usage.peak_cpu_percent, percent)
        usage.peak_rss_mb = max(usage.peak_rss_mb, rss / 2**20)
        usage.peak_processes = max(usage.peak_processes, len(procs))

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)
        for instance in self.instances:
            self.sample(instance)


class Topology:
    """The instances of one scenario run, started and stopped together."""

    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances
        self.sampler = Sampler(instances)

    def __iter__(self) -> Iterator[Instance]:
        return iter(self.instances)

    def start(self, one_by_one: tuple[str, float] | None = None) -> None:
        """Start every instance; with ``one_by_one=(ready_path, timeout)``,
        each waits for the one before it to be ready (a rolling start)."""
        for instance in self.instances:
            check_port_free(instance.port, instance.host)
        self.sampler.start()
        for instance in self.instances:
            instance.start()
            if one_by_one is not None:
                path, timeout = one_by_one
                Topology([instance]).wait_ready(path, timeout)

    def wait_ready(
        self, path: str, timeout: float, allow_failures: bool = False
    ) -> list[Instance]:
        """Wait until every instance answers ``path`` with 200.

        An instance that exits first failed to boot: that is an error naming
        its exit code and the end of its log, unless the scenario expects boot
        failures, in which case the failed instances are returned as long as
        one instance is up.
        """
        deadline = time.monotonic() + timeout
        # Instances found ready before (a rolling start) keep their boot time.
        pending = [i for i in self.instances if i.ready_seconds is None]
        failed: list[Instance] = []
        with httpx.Client(timeout=1.0) as client:
            while pending:
                for instance in list(pending):
                    code = instance.exit_code
                    if code is not None:
                        instance.error = (
                            f"exited during boot with code {code}: "
                            f"{last_lines(instance.log_path)}"
                        )
                        if not allow_failures:
                            raise TopologyError(
                                f"instance {instance.id} {instance.error}"
                            )
                        pending.remove(instance)
                        failed.append(instance)
                    elif self._answers(client, instance, path):
                        instance.ready_seconds = round(
                            time.monotonic() - instance.started_at, 3
                        )
                        pending.remove(instance)
                if pending and time.monotonic() > deadline:
                    names = ", ".join(instance.id for instance in pending)
                    raise TopologyError(
                        f"instance(s) {names} not ready after {timeout:.0f} s; "
                        f"see {pending[0].log_path}"
                    )
                if pending:
                    time.sleep(0.05)
        if len(failed) == len(self.instances):
            raise TopologyError(
                f"every instance failed during boot; first: instance "
                f"{failed[0].id} {failed[0].error}"
            )
        return failed

    @staticmethod
    def _answers(client: httpx.Client, instance: Instance, path: str) -> bool:
        try:
            return client.get(instance.url + path).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.sampler.is_alive():
            self.sampler.stop()
        for instance in self.instances:
            instance.signal_group(signal.SIGTERM)
        for instance in self.instances:
            instance.stop()

    def alive(self) -> list[int]:
        return [
            proc.pid for instance in self.instances for proc in instance.processes()
        ]


def reference_command() -> list[str]:
    """The reference server, run by the interpreter the harness runs on."""
    return [sys.executable, "-m", "reference"]
