from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness.topology import Instance, Topology, TopologyError, free_port

# A target that answers /ready over HTTP and forks a child, like a server
# with workers; the child must go down with it.
SERVER = """
import http.server, os, sys, time
if os.fork() == 0:
    time.sleep(600)
    sys.exit(0)
class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ready" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ready).serve_forever()
"""


def instance(tmp_path: Path, name: str, code: str, port: int | None = None) -> Instance:
    port = port or free_port()
    return Instance(
        id=name,
        command=[sys.executable, "-c", code, str(port)],
        port=port,
        env={},
        workdir=tmp_path / name,
        log_path=tmp_path / f"{name}.log",
    )


def wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [
            pid
            for pid in alive
            if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        ]
        time.sleep(0.05)
    return alive


def test_instances_start_answer_and_stop_with_their_children(tmp_path: Path) -> None:
    topology = Topology(
        [instance(tmp_path, "a", SERVER), instance(tmp_path, "b", SERVER)]
    )
    try:
        topology.start()
        assert topology.wait_ready("/ready", timeout=10) == []
        pids = topology.alive()
        assert len(pids) == 4  # two servers, each with a forked child
        assert all(i.ready_seconds is not None for i in topology)
    finally:
        topology.stop()
    assert wait_gone(pids) == []
    assert topology.instances[0].usage.peak_processes == 2


def test_a_rolling_start_keeps_each_boot_time(tmp_path: Path) -> None:
    topology = Topology(
        [instance(tmp_path, "a", SERVER), instance(tmp_path, "b", SERVER)]
    )
    try:
        topology.start(one_by_one=("/ready", 10))
        booted = [i.ready_seconds for i in topology]
        assert None not in booted
        # Waiting on the whole topology afterwards must not time a again from
        # its start, which would add b's boot to it.
        assert topology.wait_ready("/ready", timeout=10) == []
        assert [i.ready_seconds for i in topology] == booted
        pids = topology.alive()
    finally:
        topology.stop()
    assert wait_gone(pids) == []


def test_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        first = instance(tmp_path, "a", SERVER)
        topology = Topology([first, instance(tmp_path, "b", SERVER, port=port)])
        with pytest.raises(TopologyError, match=f"port {port} on 127.0.0.1 is in use"):
            topology.start()
        assert first.process is None


def test_instance_that_exits_during_boot_names_code_and_log(tmp_path: Path) -> None:
    crash = "print('cannot load the app: no module named cms'); raise SystemExit(3)"
    topology = Topology(
        [instance(tmp_path, "a", SERVER), instance(tmp_path, "b", crash)]
    )
    try:
        topology.start()
        with pytest.raises(
            TopologyError,
            match="instance b exited during boot with code 3: cannot load the app",
        ):
            topology.wait_ready("/ready", timeout=10)
        pids = topology.alive()
    finally:
        topology.stop()
    assert wait_gone(pids) == []


def test_allowed_boot_failures_are_returned(tmp_path: Path) -> None:
    topology = Topology(
        [
            instance(tmp_path, "a", SERVER),
            instance(tmp_path, "b", "raise SystemExit(3)"),
        ]
    )
    try:
        topology.start()
        failed = topology.wait_ready("/ready", timeout=10, allow_failures=True)
    finally:
        topology.stop()
    assert [i.id for i in failed] == ["b"]
    assert "code 3" in (failed[0].error or "")
