"""Faults injected into a running topology, each measured from outside:
SIGKILL of one worker (how long until a new process answers), and SIGTERM of
an instance (do in-flight requests finish, do all its processes exit, is the
port free afterwards)."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from harness.topology import Instance, TopologyError, check_port_free
from harness.workload import fresh_connections

REPLACEMENT_TIMEOUT = 10.0
# Body of the slow uploads kept in flight across a SIGTERM.
SLOW_UPLOAD_CHUNKS = 10
SLOW_UPLOAD_CHUNK_SECONDS = 0.1


class FaultError(Exception):
    pass


def worker_pids(instance: Instance) -> list[int]:
    """The primary's direct children: its workers in cluster mode."""
    if instance.pid is None:
        return []
    try:
        children = psutil.Process(instance.pid).children()
    except psutil.NoSuchProcess:
        return []
    return [child.pid for child in children]


def kill_worker(instance: Instance) -> float:
    """SIGKILL one worker; return seconds until a process that was not serving
    before answers a request."""
    before = worker_pids(instance)
    if not before:
        raise FaultError(
            f"instance {instance.id} has no worker to kill; is cluster mode on?"
        )
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    with fresh_connections(instance.url) as client:
        while time.monotonic() - killed_at < REPLACEMENT_TIMEOUT:
            try:
                response = client.get("/_health/live")
            except httpx.HTTPError:
                continue
            pid = int(response.headers.get("x-clusterproof-pid", 0))
            if pid not in before:
                return time.monotonic() - killed_at
    raise FaultError(
        f"no replacement for worker pid {victim} of instance {instance.id} "
        f"answered within {REPLACEMENT_TIMEOUT:.0f} s"
    )


@dataclass
class Replacements:
    seconds: list[float] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        median = statistics.median(self.seconds) if self.seconds else None
        return {
            "worker_kills": len(self.seconds),
            "replacement_seconds": self.seconds,
            "replacement_seconds_median": median,
        }


def _slow_body(boundary: str) -> Any:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="slow.txt"\r\nContent-Type: text/plain\r\n\r\n'
    ).encode()
    yield head
    for _ in range(SLOW_UPLOAD_CHUNKS):
        time.sleep(SLOW_UPLOAD_CHUNK_SECONDS)
        yield b"x" * 1024
    yield f"\r\n--{boundary}--\r\n".encode()


@dataclass
class Shutdown:
    """SIGTERM to an instance while slow uploads are in flight."""

    in_flight: int
    statuses: list[int | None] = field(default_factory=list)
    exit_code: int | None = None
    seconds_to_exit: float | None = None
    processes_left: int = 0
    port_free: bool = False

    def run(self, instance: Instance, deadline: float) -> None:
        tree = [proc.pid for proc in instance.processes()]
        started = threading.Barrier(self.in_flight + 1)
        threads = [
            threading.Thread(target=self._upload, args=(instance, started))
            for _ in range(self.in_flight)
        ]
        for thread in threads:
            thread.start()
        started.wait()
        # Let every upload reach the server before the signal.
        time.sleep(SLOW_UPLOAD_CHUNK_SECONDS * 2)
        assert instance.process is not None
        instance.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        try:
            self.exit_code = instance.process.wait(timeout=deadline)
            self.seconds_to_exit = round(time.monotonic() - signalled, 3)
        except subprocess.TimeoutExpired:  # reported as still running, not hidden
            self.exit_code = None
        for thread in threads:
            thread.join(timeout=deadline)
        time.sleep(0.2)
        self.processes_left = sum(1 for pid in tree if _alive(pid))
        try:
            check_port_free(instance.port, instance.host)
            self.port_free = True
        except TopologyError:
            self.port_free = False

    def _upload(self, instance: Instance, started: threading.Barrier) -> None:
        boundary = "clusterproof-slow-upload"
        with fresh_connections(instance.url) as client:
            started.wait()
            try:
                response = client.post(
                    "/upload",
                    content=_slow_body(boundary),
                    headers={
                        "content-type": f"multipart/form-data; boundary={boundary}"
                    },
                )
                self.statuses.append(response.status_code)
            except httpx.HTTPError:
                self.statuses.append(None)

    def metrics(self) -> dict[str, Any]:
        failed = sum(1 for status in self.statuses if status is None or status >= 400)
        return {
            "in_flight_requests": len(self.statuses),
            "in_flight_failed": failed,
            "shutdown_exit_code": self.exit_code,
            "shutdown_seconds": self.seconds_to_exit,
            "processes_left": self.processes_left,
            "port_free": int(self.port_free),
        }


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
