"""Cluster mode end to end: `python -m reference` with server.cluster.enabled.

Every server runs in its own session (process group); the `launch` fixture
kills each group afterwards and checks with psutil that nothing is left.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient

from harness.sinks import HttpSink, SmtpSink
from harness.sinks.ledger import read_ledger
from harness.topology import free_port
from reference.exits import EXIT_CONFIG, EXIT_LISTEN, EXIT_WORKER_BOOT
from tests.reference.support import wait_for
from tests.reference.test_webhooks import SECRET

TOKEN = "cluster-test"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
INSTANCE = "cl"
NINE = "2026-01-01T09:00:00Z"


class Server:
    """One `python -m reference` in a session of its own, logging to a file."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / f"server-{self.port}.log"
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CLUSTERPROOF_")
            and k not in ("DATABASE_URL", "INSTANCE_TYPE")
        }
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "reference", "--instance-id", INSTANCE]
                + ["--port", str(self.port)],
                env={**clean, **env},
                cwd=directory,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        self.pid = self.process.pid

    def log(self) -> str:
        return self.log_path.read_text()

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.base + path, timeout=10, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.base + path, timeout=10, **kwargs)

    def cluster(self) -> dict[str, Any]:
        response = self.get("/admin/cluster", headers=ADMIN)
        response.raise_for_status()
        return dict(response.json())

    def wait_ready(self, workers: int, timeout: float = 15.0) -> dict[str, Any]:
        """Wait until /admin/cluster shows `workers` ready workers."""
        found: dict[str, Any] = {}

        def ready() -> bool:
            nonlocal found
            assert self.process.poll() is None, self.log()
            try:
                found = self.cluster()
            except httpx.HTTPError:
                return False
            live = [w for w in found["workers"] if w["ready"]]
            return len(live) == len(found["workers"]) == workers

        wait_for(ready, timeout)
        return found

    def served_by(self, path: str = "/_health/live") -> int:
        """The pid that answered a GET over a new connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path, headers={"Connection": "close"})
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            assert response.headers["x-clusterproof-instance"] == INSTANCE
            return int(response.headers["x-clusterproof-pid"])
        finally:
            connection.close()

    def group(self) -> list[psutil.Process]:
        """Live processes of this server's process group."""
        found = []
        for process in psutil.process_iter():
            try:
                if os.getpgid(process.pid) == self.pid and process.status() not in (
                    psutil.STATUS_ZOMBIE,
                    psutil.STATUS_DEAD,
                ):
                    found.append(process)
            except (OSError, psutil.Error):
                continue
        return found

    def wait_group_gone(self, timeout: float = 10.0) -> float:
        started = time.monotonic()
        wait_for(lambda: not self.group(), timeout)
        return time.monotonic() - started

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        for process in self.group():
            with contextlib.suppress(psutil.Error):
                process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers; kill each whole process group afterwards."""
    started: list[Server] = []

    def start(env: dict[str, str]) -> Server:
        server = Server(tmp_path, env)
        started.append(server)
        return server

    yield start

    for server in started:
        print(server.log())  # shown when the test failed
        server.kill()
        server.wait_group_gone()


def cluster_env(database_url: str, tmp_path: Path, **more: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "CLUSTERPROOF_SERVER__CLUSTER__ENABLED": "true",
        "CLUSTERPROOF_SERVER__CLUSTER__WORKERS": "2",
        "CLUSTERPROOF_SERVER__CLUSTER__DRAIN_SECONDS": "10",
        "CLUSTERPROOF_ADMIN__TOKEN": TOKEN,
        "CLUSTERPROOF_WEBHOOKS__SECRET": SECRET,
        "CLUSTERPROOF_UPLOADS__DIR": str(tmp_path / "uploads"),
        # A primary killed by SIGKILL leaves its state folder in the test's.
        "TMPDIR": str(tmp_path),
        **more,
    }


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
        except OSError:
            return False
    return True


def test_cluster_serves_from_workers_and_delivers_from_the_primary(
    launch: Callable[..., Server],
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two workers answer every request, the primary none; a write to a
    worker is delivered once, by the primary; a killed worker is replaced;
    SIGTERM ends everything with exit 0 and frees the port."""
    sink = HttpSink(tmp_path / "webhooks.jsonl", secret=SECRET)
    sink.start()
    try:
        started = time.monotonic()
        server = launch(cluster_env(database_url, tmp_path))
        state = server.wait_ready(workers=2)
        boot = time.monotonic() - started

        children = {p.pid for p in psutil.Process(server.pid).children()}
        workers = {w["pid"] for w in state["workers"]}
        assert state["mode"] == "cluster" and state["primary_pid"] == server.pid
        assert [w["number"] for w in state["workers"]] == [0, 1]
        assert workers == children and len(workers) == 2 and state["restarts"] == 0

        served: set[int] = set()
        deadline = time.monotonic() + 10
        with ThreadPoolExecutor(8) as pool:
            while len(served) < 2 and time.monotonic() < deadline:
                served |= set(pool.map(lambda _: server.served_by(), range(16)))
        assert served == workers  # both workers, and never the primary

        server.post(
            "/admin/webhooks",
            json={"url": sink.url + "/hook", "events": ["entry.create"]},
            headers=ADMIN,
        ).raise_for_status()
        article = server.post("/api/articles", json={"title": "From a worker"})
        assert article.status_code == 201
        assert int(article.headers["x-clusterproof-pid"]) in workers
        wait_for(lambda: read_ledger(sink.ledger_path), timeout=10)
        time.sleep(0.5)  # room for a duplicate to show up
        deliveries = read_ledger(sink.ledger_path)
        assert [(d["event"], d["entry_id"], d["pid"]) for d in deliveries] == [
            ("entry.create", article.json()["id"], server.pid)
        ]
        assert deliveries[0]["signature_valid"] is True

        victim = state["workers"][0]["pid"]
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        replaced = server.wait_ready(workers=2)
        replacement = time.monotonic() - killed
        assert replaced["workers"][0]["pid"] not in (victim, server.pid)
        assert replaced["restarts"] == 1
        assert server.served_by() != victim

        run_dirs = list(tmp_path.glob(f"clusterproof-{server.pid}-*"))  # TMPDIR
        assert len(run_dirs) == 1
        terminated = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=15) == 0
        stopped = time.monotonic() - terminated
        server.wait_group_gone()
        assert port_is_free(server.port)
        assert not run_dirs[0].exists()
    finally:
        sink.stop()

    log = server.log()
    assert "respawning" in log and "exited with signal 9 (SIGKILL)" in log
    assert f"primary {INSTANCE} pid {server.pid}: migrations at head" in log
    assert f"worker 1 {INSTANCE} pid " in log
    primary = f"primary {INSTANCE} pid {server.pid}: "
    assert f"{primary}worker 0 (pid {victim}) exited with signal 9" in log
    assert f": primary {server.pid}" not in log  # the prefix names it once
    assert log.rstrip().endswith("stopped, exit code 0")
    with capsys.disabled():
        print(
            f"\ncluster on {database_url.split(':')[0]}: ready in {boot:.2f} s, "
            f"worker replaced in {replacement * 1000:.0f} ms, "
            f"SIGTERM to exit {stopped * 1000:.0f} ms"
        )


@pytest.mark.parametrize(("fault", "per_occurrence"), [("false", 1), ("true", 3)])
def test_pinned_cron_runs_once_per_occurrence_unless_the_fault_is_on(
    launch: Callable[..., Server], tmp_path: Path, fault: str, per_occurrence: int
) -> None:
    """Only the primary runs cron: the 09:00 digest is mailed once and the
    due article published once. faults.cron_on_workers=true makes both
    workers run cron too, which the gate must catch: three of each."""
    with (
        SmtpSink(tmp_path / "mail.jsonl") as smtp,
        HttpSink(tmp_path / "webhooks.jsonl", secret=SECRET) as hooks,
    ):
        server = launch(
            cluster_env(
                f"sqlite:///{tmp_path}/cp.db",
                tmp_path,
                CLUSTERPROOF_MAIL__SMTP_PORT=str(smtp.port),
                CLUSTERPROOF_FAULTS__CRON_ON_WORKERS=fault,
                # Eight seconds before the digest's fire time: four were
                # sometimes spent booting on a busy 2-core machine.
                CLUSTERPROOF_CLOCK__PIN="2026-01-01T08:59:52Z",
                CLUSTERPROOF_CLOCK__ANCHOR=repr(time.time()),
            )
        )
        server.wait_ready(workers=2)
        server.post(
            "/admin/webhooks",
            json={"url": hooks.url + "/hook", "events": ["entry.publish"]},
            headers=ADMIN,
        ).raise_for_status()
        server.post(
            "/api/articles", json={"title": "Due", "publish_at": "2026-01-01T08:59:30Z"}
        ).raise_for_status()

        def all_arrived() -> bool:
            emails = read_ledger(smtp.ledger_path)
            return (
                len(emails) >= per_occurrence
                and len(read_ledger(hooks.ledger_path)) >= per_occurrence
            )

        wait_for(all_arrived, timeout=15)
        time.sleep(1.0)  # room for a duplicate to show up
        emails = read_ledger(smtp.ledger_path)
        webhooks = read_ledger(hooks.ledger_path)
        executions = server.get("/admin/cron-executions", headers=ADMIN).json()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=15) == 0

    nine = [e for e in executions if e["occurrence"] == NINE]
    assert [e["occurrence"] for e in emails] == [NINE] * per_occurrence
    assert len({w["webhook_id"] for w in webhooks}) == per_occurrence
    assert {w["pid"] for w in webhooks} == {server.pid}  # the primary delivers
    for task in ("daily-digest", "publish-scheduled"):
        assert sum(e["task"] == task for e in nine) == per_occurrence
    if fault == "false":
        assert (
            {e["pid"] for e in nine}
            == {email["pid"] for email in emails}
            == {server.pid}
        )
    else:
        assert "faults.cron_on_workers is on" in server.log()
        assert len({e["pid"] for e in nine}) == 3


def test_sighup_to_the_group_stops_the_cluster_gracefully(
    launch: Callable[..., Server], tmp_path: Path
) -> None:
    """A closed terminal sends SIGHUP to the whole group: the primary drains
    the workers as on SIGTERM, and the workers do not stop on their own."""
    server = launch(cluster_env(f"sqlite:///{tmp_path}/cp.db", tmp_path))
    workers = [w["pid"] for w in server.wait_ready(workers=2)["workers"]]

    os.killpg(server.pid, signal.SIGHUP)
    assert server.process.wait(timeout=15) == 0
    server.wait_group_gone()

    log = server.log()
    primary = f"primary {INSTANCE} pid {server.pid}: "
    assert f"{primary}SIGHUP received, stopping gracefully" in log
    for number, pid in enumerate(workers):
        worker = f"worker {number} {INSTANCE} pid {pid}: "
        assert f"{worker}SIGTERM received, stopping gracefully" in log
        assert f"{worker}stopped" in log
    assert log.count("SIGHUP") == 1 and "respawning" not in log
    assert log.rstrip().endswith("stopped, exit code 0")


def test_sigquit_stops_at_once_and_says_so(
    launch: Callable[..., Server], tmp_path: Path
) -> None:
    server = launch(cluster_env(f"sqlite:///{tmp_path}/cp.db", tmp_path))
    workers = [w["pid"] for w in server.wait_ready(workers=2)["workers"]]

    server.process.send_signal(signal.SIGQUIT)
    assert server.process.wait(timeout=5) == 0
    server.wait_group_gone()

    log = server.log()
    primary = f"primary {INSTANCE} pid {server.pid}: "
    assert f"{primary}SIGQUIT received, stopping immediately" in log
    assert f"{primary}stopping immediately, killing 2 workers" in log
    for pid in workers:
        assert f"(pid {pid}) exited with signal 9 (SIGKILL)" in log
    assert "drain" not in log  # nothing was drained, so no deadline passed


def test_primary_sigkill_takes_the_workers_down(
    launch: Callable[..., Server], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = launch(cluster_env(f"sqlite:///{tmp_path}/cp.db", tmp_path))
    workers = [w["pid"] for w in server.wait_ready(workers=2)["workers"]]

    os.kill(server.pid, signal.SIGKILL)
    server.process.wait(timeout=5)
    gone = server.wait_group_gone(timeout=10)

    assert not any(_alive(pid) for pid in workers)
    wait_for(lambda: port_is_free(server.port), timeout=5)
    with capsys.disabled():
        print(f"\nworkers gone {gone * 1000:.0f} ms after SIGKILL of the primary")


def test_a_worker_that_cannot_boot_stops_the_cluster(
    launch: Callable[..., Server], tmp_path: Path
) -> None:
    """uploads.dir is a regular file: every worker fails at boot. The
    Supervisor backs off and gives up after five failures, not a storm."""
    not_a_dir = tmp_path / "uploads-file"
    not_a_dir.write_text("not a directory")
    server = launch(
        cluster_env(
            f"sqlite:///{tmp_path}/cp.db",
            tmp_path,
            CLUSTERPROOF_UPLOADS__DIR=str(not_a_dir),
        )
    )

    assert server.process.wait(timeout=20) == EXIT_WORKER_BOOT
    server.wait_group_gone()
    log = server.log()
    assert (
        f"primary {INSTANCE} pid {server.pid}: worker failed to boot 5 times "
        "in a row; last exit code 1; giving up"
    ) in log
    assert f"uploads.dir {str(not_a_dir)!r} cannot be created" in log
    assert log.count(" booting") == 5


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CLUSTERPROOF_SERVER__CLUSTER__WORKERS": "abc"},
            "server.cluster.workers must be a whole number from 0 to 256, got 'abc'",
        ),
        (
            {"CLUSTERPROOF_SERVER__CLUSTER__WORKERS": "10000"},
            "server.cluster.workers must be a whole number from 0 to 256, got '10000'",
        ),
        ({"INSTANCE_TYPE": "boss"}, "INSTANCE_TYPE must be primary or worker"),
        (
            {"CLUSTERPROOF_SERVER__CLUSTER__ENABLED": "maybe"},
            "server.cluster.enabled must be true or false, got 'maybe'",
        ),
        (
            {"CLUSTERPROOF_SERVER__CLUSTER__DRAIN_SECONDS": "-1"},
            "server.cluster.drain_seconds must be a whole number of seconds from 0 "
            "to 3600, got '-1'",
        ),
    ],
)
def test_bad_settings_exit_2_before_anything_is_written(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reference"],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DATABASE_URL": f"sqlite:///{tmp_path}/data/cp.db",
            "CLUSTERPROOF_SERVER__CLUSTER__ENABLED": "true",
            **env,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == EXIT_CONFIG
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert list(tmp_path.iterdir()) == []  # no database, no data dir


def test_port_in_use_is_one_line_before_forking(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "reference", "--port", str(port)],
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                **cluster_env(f"sqlite:///{tmp_path}/data/cp.db", tmp_path),
            },
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )

    assert result.returncode == EXIT_LISTEN
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use)" in lines[0]
    assert "--port" in lines[0]
    assert not (tmp_path / "data").exists()  # nothing migrated


def test_cluster_off_serves_from_the_one_process(
    launch: Callable[..., Server], tmp_path: Path
) -> None:
    server = launch(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path}/cp.db",
            "CLUSTERPROOF_ADMIN__TOKEN": TOKEN,
        }
    )
    wait_for(lambda: _answers(server), timeout=15)

    assert {server.served_by() for _ in range(4)} == {server.pid}
    state = server.cluster()
    assert (state["mode"], state["primary_pid"], state["workers"]) == (
        "single",
        server.pid,
        [],
    )
    assert psutil.Process(server.pid).children() == []
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=15) == 0


def test_admin_cluster_in_single_mode(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.get("/admin/cluster", headers=admin)
    assert response.status_code == 200
    state = response.json()
    assert state["mode"] == "single" and state["primary_pid"] == os.getpid()
    assert state["workers"] == [] and state["restarts"] == 0
    assert state["started_at"].endswith("Z") and state["uptime_seconds"] >= 0
    assert client.get("/admin/cluster").status_code == 401


def _answers(server: Server) -> bool:
    assert server.process.poll() is None, server.log()
    try:
        return server.get("/_health/ready").status_code == 200
    except httpx.HTTPError:
        return False


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
