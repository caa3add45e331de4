"""The cluster supervisor, driven as a real forked primary with uvicorn workers.

Every test forks a primary into its own process group; the `cluster` fixture
(or the `Cluster` context manager) kills the whole group and checks with
psutil that no process of it is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import statistics
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import psutil
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference.exits import EXIT_OK, EXIT_SERVICES_START, EXIT_WORKER_BOOT
from reference.supervisor import Supervisor, _describe_exit

WORKERS = 2


# -- what runs in the workers -------------------------------------------------


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with its pid; ``?delay=1`` answers a second later."""
    assert scope["type"] == "http"
    query = parse_qs(scope["query_string"].decode())
    await asyncio.sleep(float(query.get("delay", ["0"])[0]))
    pid = str(os.getpid()).encode()
    headers = [(b"content-type", b"text/plain"), (b"x-served-by", pid)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": pid})


class ReadyServer(uvicorn.Server):
    """Reports ready once uvicorn accepts on the socket, not before."""

    def __init__(self, config: uvicorn.Config, ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._ready()


def serve_uvicorn(sock: socket.socket, number: int, ready: Callable[[], None]) -> None:
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    ReadyServer(config, ready).run(sockets=[sock])


def serve_crashing(
    spawns: Path, sock: socket.socket, number: int, ready: Callable[[], None]
) -> None:
    with spawns.open("a") as file:
        file.write(f"{time.monotonic()}\n")
    raise RuntimeError("cannot import the app")


# -- a primary forked from the test -------------------------------------------


class Cluster:
    """One forked primary: its pid, port, published state and log."""

    def __init__(
        self,
        directory: Path,
        serve: Callable[..., object] = serve_uvicorn,
        workers: int = WORKERS,
        **options: Any,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.state_path = directory / "state.json"
        self.log_path = directory / "primary.log"
        self.directory = directory
        self.exit_code: int | None = None

        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.port = listener.getsockname()[1]

        pid = os.fork()
        if pid == 0:
            self._primary(listener, serve, workers, options)
        listener.close()
        self.pid = pid
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also done in the child; whoever runs first

    def _primary(
        self,
        listener: socket.socket,
        serve: Callable[..., object],
        workers: int,
        options: dict[str, Any],
    ) -> None:
        code = 70
        try:
            os.setpgid(0, 0)
            logging.basicConfig(
                filename=self.log_path,
                level=logging.INFO,
                format="%(levelname)s pid %(process)d: %(message)s",
                force=True,
            )
            state_path = self.state_path

            def publish(state: Any) -> None:
                scratch = state_path.with_suffix(".tmp")
                scratch.write_text(json.dumps(state.as_dict()))
                os.replace(scratch, state_path)

            supervisor = Supervisor(
                listener, workers, serve, on_change=publish, tick=0.2, **options
            )
            code = supervisor.run()
        except BaseException:
            with self.log_path.open("a") as file:
                traceback.print_exc(file=file)
        finally:
            os._exit(code)

    # -- observing --

    def state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {"workers": {}, "ready": [], "restarts": 0}

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def wait_ready(self, count: int = WORKERS, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until ``count`` workers are live and ready; return the state."""

        def all_ready(state: dict[str, Any]) -> bool:
            return len(state["workers"]) == count and len(state["ready"]) == count

        return self.wait_for(all_ready, timeout)

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; state {state}\n{self.log()}")
            time.sleep(0.02)

    def worker_pids(self) -> dict[int, int]:
        return {int(n): pid for n, pid in self.state()["workers"].items()}

    def get(self, path: str = "/", timeout: float = 10.0) -> tuple[int, int]:
        """GET over a fresh connection; returns (status, pid that served it)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path, headers={"Connection": "close"})
            response = connection.getresponse()
            response.read()
            return response.status, int(response.headers["x-served-by"])
        finally:
            connection.close()

    # -- acting --

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float = 15.0) -> int:
        if self.exit_code is not None:
            return self.exit_code
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.exit_code = os.waitstatus_to_exitcode(status)
                return self.exit_code
            if time.monotonic() > deadline:
                raise AssertionError(f"primary still running\n{self.log()}")
            time.sleep(0.02)

    def leftovers(self) -> list[psutil.Process]:
        """Live (not zombie) processes of this cluster's process group."""
        found = []
        for process in psutil.process_iter():
            try:
                if (
                    os.getpgid(process.pid) == self.pid
                    and process.status() != psutil.STATUS_ZOMBIE
                ):
                    found.append(process)
            except (OSError, psutil.Error):
                continue
        return found

    def wait_no_leftovers(self, timeout: float = 5.0) -> float:
        """Seconds until no process of the group is left."""
        started = time.monotonic()
        while self.leftovers():
            if time.monotonic() - started > timeout:
                raise AssertionError(f"left running: {self.leftovers()}\n{self.log()}")
            time.sleep(0.02)
        return time.monotonic() - started

    def kill_everything(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        for process in self.leftovers():
            with contextlib.suppress(psutil.Error):
                process.kill()
        if self.exit_code is None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
                self.exit_code = -signal.SIGKILL

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill_everything()
        self.wait_no_leftovers()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Start clusters; kill each whole process group afterwards."""
    started: list[Cluster] = []

    def start(**kwargs: Any) -> Cluster:
        instance = Cluster(tmp_path / f"cluster{len(started)}", **kwargs)
        started.append(instance)
        return instance

    yield start

    for instance in started:
        print(instance.log())  # shown when the test failed
        instance.kill_everything()
        instance.wait_no_leftovers()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- tests --------------------------------------------------------------------


def test_workers_come_up_and_share_the_requests(
    cluster: Callable[..., Cluster],
) -> None:
    primary = cluster()
    state = primary.wait_ready()

    assert state["primary_pid"] == primary.pid
    workers = set(state["workers"].values())
    assert len(workers) == WORKERS
    for pid in workers:
        assert psutil.Process(pid).ppid() == primary.pid

    served: set[int] = set()
    deadline = time.monotonic() + 10
    with ThreadPoolExecutor(8) as pool:
        while len(served) < 2 and time.monotonic() < deadline:
            results = list(pool.map(lambda _: primary.get("/?delay=0.02"), range(16)))
            assert {status for status, _ in results} == {200}
            served |= {pid for _, pid in results}
    assert len(served) >= 2
    assert served <= workers


def test_killed_worker_is_replaced(cluster: Callable[..., Cluster]) -> None:
    primary = cluster()
    before = primary.wait_ready()["workers"]["0"]

    os.kill(before, signal.SIGKILL)
    state = primary.wait_for(
        lambda s: s["workers"].get("0") not in (None, before) and 0 in s["ready"],
        timeout=10,
    )

    assert state["restarts"] == 1
    assert f"worker 0 (pid {before}) exited with signal 9 (SIGKILL), respawning" in (
        primary.log()
    )
    assert "WARNING" in primary.log()
    assert primary.get()[0] == 200


def serves_alone(pid: int, state: dict[str, Any]) -> bool:
    return state["workers"] == {"0": pid} and state["ready"] == [0]


def test_respawn_latency(
    cluster: Callable[..., Cluster], capsys: pytest.CaptureFixture[str]
) -> None:
    """Seconds from SIGKILL of the only worker to a response from its heir.

    The request is sent right after the kill: it waits in the listening
    socket's queue (the primary keeps the socket open) until the new worker
    accepts it.
    """
    primary = cluster(workers=1)
    victim = primary.wait_ready(1)["workers"]["0"]
    latencies = []
    for _ in range(5):
        started = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        status, heir = primary.get(timeout=10)
        latencies.append(time.monotonic() - started)
        assert (status, heir != victim) == (200, True)
        victim = heir
        primary.wait_for(partial(serves_alone, heir), timeout=10)

    with capsys.disabled():
        print(
            f"\nrespawn latency, SIGKILL to first response: "
            f"median {statistics.median(latencies) * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms over {len(latencies)} kills"
        )
    assert max(latencies) < 10


def test_boot_failures_back_off_then_give_up(
    cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    spawns = tmp_path / "spawns"
    primary = cluster(
        serve=partial(serve_crashing, spawns),
        max_boot_failures=5,
        backoff_initial=0.05,
    )

    assert primary.wait_exit(timeout=20) == EXIT_WORKER_BOOT
    primary.wait_no_leftovers()
    times = [float(line) for line in spawns.read_text().split()]
    log = primary.log()

    assert len(times) <= 5
    # Two workers fail together, then one at a time after 0.1, 0.2, 0.4 s.
    assert times[-1] - times[0] >= 0.6
    assert (
        f"CRITICAL pid {primary.pid}: worker failed to boot 5 times in a row; "
        "last exit code 1; giving up"
    ) in log
    assert "respawning in 0.4 s" in log
    assert "RuntimeError: cannot import the app" in log


def test_sigterm_drains_in_flight_request(
    cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    calls = tmp_path / "services"

    def on_start() -> None:
        with calls.open("a") as file:
            file.write("start\n")

    def on_stop(deadline: float) -> None:
        with calls.open("a") as file:
            file.write(f"stop {deadline - time.monotonic():.1f}\n")

    primary = cluster(drain_timeout=10, on_start=on_start, on_stop=on_stop)
    workers = primary.wait_ready()["workers"].values()
    result: list[tuple[int, int]] = []
    slow = threading.Thread(target=lambda: result.append(primary.get("/?delay=1")))
    slow.start()
    time.sleep(0.3)  # the request is in a worker now

    primary.signal(signal.SIGTERM)
    slow.join(10)

    assert result and result[0][0] == 200
    assert primary.wait_exit() == EXIT_OK
    primary.wait_no_leftovers()
    assert not any(alive(pid) for pid in workers)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", primary.port), timeout=1)
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", primary.port))
        again.listen()
    lines = calls.read_text().split("\n")
    assert lines[0] == "start"
    assert lines[1].startswith("stop ") and float(lines[1].split()[1]) > 8
    assert "respawning" not in primary.log()


def test_sighup_to_the_group_drains_like_sigterm(
    cluster: Callable[..., Cluster],
) -> None:
    """A closed terminal sends SIGHUP to the whole process group. The primary
    drains as on SIGTERM; the workers ignore the hangup and wait for it."""
    primary = cluster(drain_timeout=10)
    workers = primary.wait_ready()["workers"].values()
    result: list[tuple[int, int]] = []
    slow = threading.Thread(target=lambda: result.append(primary.get("/?delay=1")))
    slow.start()
    time.sleep(0.3)  # the request is in a worker now

    os.killpg(primary.pid, signal.SIGHUP)
    slow.join(10)

    assert result and result[0][0] == 200
    assert primary.wait_exit() == EXIT_OK
    primary.wait_no_leftovers()
    log = primary.log()
    assert f"INFO pid {primary.pid}: SIGHUP received, stopping gracefully" in log
    for pid in workers:
        assert f"(pid {pid}) exited with signal 15 (SIGTERM)" in log
    assert "SIGHUP)" not in log and "respawning" not in log


def test_sighup_stays_ignored_under_nohup(cluster: Callable[..., Cluster]) -> None:
    # The forked primary inherits the ignored SIGHUP, as under nohup.
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        primary = cluster()
    finally:
        signal.signal(signal.SIGHUP, previous)
    workers = primary.wait_ready()["workers"]

    os.killpg(primary.pid, signal.SIGHUP)
    time.sleep(0.5)

    assert primary.get()[0] == 200
    assert primary.state()["workers"] == workers
    primary.signal(signal.SIGTERM)
    assert primary.wait_exit() == EXIT_OK
    assert "SIGHUP" not in primary.log()


def test_sigquit_stops_immediately(cluster: Callable[..., Cluster]) -> None:
    def on_stop(deadline: float) -> None:
        time.sleep(5)  # a cron execution that would take its time

    primary = cluster(drain_timeout=30, on_start=lambda: None, on_stop=on_stop)
    workers = primary.wait_ready()["workers"]
    failed: list[BaseException] = []

    def slow_request() -> None:
        try:
            primary.get("/?delay=5")
        except (OSError, http.client.HTTPException) as exc:
            failed.append(exc)

    slow = threading.Thread(target=slow_request)
    slow.start()
    time.sleep(0.3)
    started = time.monotonic()
    primary.signal(signal.SIGQUIT)

    assert primary.wait_exit() == EXIT_OK
    assert time.monotonic() - started < 3
    slow.join(10)
    assert failed  # the in-flight request was cut off, as asked
    primary.wait_no_leftovers()
    log = primary.log()
    assert f"pid {primary.pid}: stopping immediately, killing 2 workers" in log
    for pid in workers.values():
        assert f"(pid {pid}) exited with signal 9 (SIGKILL)" in log
    assert "on_stop still running at the immediate stop; exiting" in log
    assert "drain" not in log  # nothing was drained


@pytest.mark.parametrize(
    ("signals", "drain_timeout", "why"),
    [
        ([signal.SIGTERM], 0.5, "still running at the drain deadline"),
        ([signal.SIGTERM, signal.SIGQUIT], 30, "still draining at the immediate stop"),
        ([signal.SIGINT, signal.SIGINT], 30, "still draining at the immediate stop"),
    ],
    ids=["deadline passed", "SIGQUIT while draining", "second SIGINT"],
)
def test_a_drain_cut_short_says_why(
    cluster: Callable[..., Cluster],
    signals: list[signal.Signals],
    drain_timeout: float,
    why: str,
) -> None:
    primary = cluster(drain_timeout=drain_timeout)
    primary.wait_ready()
    served: list[tuple[int, int]] = []
    failed: list[BaseException] = []

    def slow_request() -> None:
        try:
            served.append(primary.get("/?delay=5"))
        except (OSError, http.client.HTTPException) as exc:
            failed.append(exc)

    slow = threading.Thread(target=slow_request)
    slow.start()
    time.sleep(0.3)  # the request is in a worker now
    for signum in signals:
        primary.signal(signum)
        time.sleep(0.3)

    assert primary.wait_exit() == EXIT_OK
    slow.join(10)
    assert failed and not served
    primary.wait_no_leftovers()
    # Only the worker holding the request was still there to be killed.
    (line,) = [line for line in primary.log().splitlines() if "killing it" in line]
    assert line.endswith(f") {why}, killing it"), line


def test_primary_sigkill_takes_the_workers_down(
    cluster: Callable[..., Cluster], capsys: pytest.CaptureFixture[str]
) -> None:
    primary = cluster()
    workers = list(primary.wait_ready()["workers"].values())

    primary.signal(signal.SIGKILL)
    assert primary.wait_exit() == -signal.SIGKILL
    waited = primary.wait_no_leftovers(timeout=5)

    assert not any(alive(pid) for pid in workers)
    with capsys.disabled():
        print(f"\nworkers gone {waited * 1000:.0f} ms after SIGKILL of the primary")


def test_on_start_failure_stops_the_workers(cluster: Callable[..., Cluster]) -> None:
    def on_start() -> None:
        raise ConnectionError("database unreachable")

    primary = cluster(on_start=on_start)

    assert primary.wait_exit() == EXIT_SERVICES_START
    primary.wait_no_leftovers()
    assert "primary services failed to start" in primary.log()


@settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    deaths=st.lists(
        st.tuples(st.integers(0, WORKERS - 1), st.sampled_from([0, 0.05, 0.3])),
        max_size=4,
    ),
    sigterm=st.booleans(),
)
def test_any_worker_deaths_end_with_full_cluster_or_clean_exit(
    tmp_path_factory: pytest.TempPathFactory,
    deaths: list[tuple[int, float]],
    sigterm: bool,
) -> None:
    """Deaths of workers that had reported ready never lose a worker slot.

    A death before the ready report is a boot failure, which gives up on
    purpose (see test_boot_failures_back_off_then_give_up).
    """
    with Cluster(tmp_path_factory.mktemp("property"), drain_timeout=5) as primary:
        killed: set[int] = set()

        def settled(state: dict[str, Any]) -> bool:
            pids = set(state["workers"].values())
            return len(state["ready"]) == len(pids) == WORKERS and not killed & pids

        for number, pause in deaths:
            victim = primary.wait_for(settled, timeout=10)["workers"][str(number)]
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
            time.sleep(pause)

        if sigterm:
            primary.wait_ready()  # a SIGTERM before start() meets no handler
            primary.signal(signal.SIGTERM)
            assert primary.wait_exit() == EXIT_OK
            primary.wait_no_leftovers()
            return

        state = primary.wait_for(settled, timeout=10)
        assert state["restarts"] == len(deaths)
        assert all(alive(pid) for pid in state["workers"].values())
        assert not any(alive(pid) for pid in killed)
        assert primary.get()[0] == 200


def test_describe_exit() -> None:
    assert _describe_exit(1) == "code 1"
    assert _describe_exit(-9) == "signal 9 (SIGKILL)"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workers": -1}, "workers must be a whole number from 0 to 256, got -1"),
        ({"workers": 2, "drain_timeout": -1}, "drain_timeout must be 0 or more"),
        ({"workers": 2, "max_boot_failures": 0}, "max_boot_failures must be 1 or"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with socket.socket() as sock, pytest.raises(ValueError, match=message):
        Supervisor(sock, serve=serve_uvicorn, **options)
