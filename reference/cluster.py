"""Cluster mode of the reference server: one primary, forked HTTP workers.

The primary binds the port, migrates, forks the workers through
reference.supervisor, then runs cron and webhook delivery itself and serves
no HTTP. Each worker serves the app on the inherited socket and does nothing
else. Settings were validated by main before anything here runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sqlalchemy import Engine

from reference.cluster_state import STATE_FILE_ENV, write_state
from reference.config import Settings, duties_for, worker_child_duties
from reference.db import make_engine
from reference.exits import EXIT_LISTEN, EXIT_OK
from reference.listen import ListenError, bind_listener, start_listening
from reference.logs import set_role
from reference.main import prepare_schema, serve
from reference.routers.uploads import prepare_upload_dir
from reference.services import Services, start_services, stop_services
from reference.supervisor import ClusterState, Supervisor

SERVICES_START_TIMEOUT = 30.0
# The primary waits this much longer than the drain deadline that workers and
# services are given before it kills what is left, so a worker whose requests
# overran can still cancel them and close its connections itself.
EXIT_GRACE = 1.0

log = logging.getLogger(__name__)


def run_cluster(settings: Settings) -> int:
    """Run a primary and its workers until SIGTERM/SIGINT/SIGHUP; an exit code."""
    return Primary(settings).run()


class Primary:
    """The cluster's primary: migrations, the listening socket, cron and
    webhook delivery, and the Supervisor that keeps the workers alive."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Cluster mode makes duties_for drop serves_http: the workers serve.
        self.duties = duties_for(settings)
        self.worker_duties = worker_child_duties(settings.server.role)
        if settings.faults.cron_on_workers:
            self.worker_duties = replace(self.worker_duties, runs_cron=True)
        self.state_file: Path | None = None
        self._engine: Engine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._services = Services()

    def run(self) -> int:
        cluster = self.settings.server.cluster
        if self.settings.faults.cron_on_workers:
            log.warning(
                "faults.cron_on_workers is on: every worker runs cron too, so "
                "each occurrence executes more than once; it exists only to "
                "prove the regression gate can fail"
            )
        try:
            listener = bind_listener(
                self.settings.server.host, self.settings.server.port
            )
        except ListenError as exc:
            log.error("%s", exc)
            return EXIT_LISTEN

        run_dir: Path | None = None
        try:
            code = prepare_schema(self.settings, self.duties)
            if code != EXIT_OK:
                return code
            try:
                start_listening(
                    listener, self.settings.server.host, self.settings.server.port
                )
            except ListenError as exc:
                log.error("%s", exc)
                return EXIT_LISTEN

            # Limitation: a primary killed by SIGKILL leaves this directory
            # (one small file) in the temp dir; nothing else reads it then.
            run_dir = Path(tempfile.mkdtemp(prefix=f"clusterproof-{os.getpid()}-"))
            self.state_file = run_dir / "cluster.json"
            os.environ[STATE_FILE_ENV] = str(self.state_file)
            supervisor = Supervisor(
                listener,
                cluster.workers,
                self.serve_worker,
                on_start=self.start_services,
                on_stop=self.stop_services,
                on_change=self.publish,
                drain_timeout=cluster.drain_seconds + EXIT_GRACE,
            )
            return supervisor.run()
        finally:
            listener.close()
            os.environ.pop(STATE_FILE_ENV, None)
            if run_dir is not None:
                shutil.rmtree(run_dir, ignore_errors=True)

    # -- in the primary ------------------------------------------------------

    def start_services(self) -> None:
        """Cron and webhook delivery on an event loop in a thread of their own,
        since the main thread runs the Supervisor's loop."""
        if not self.duties.runs_services:
            return
        # Workers are forked while these services run: see ForkGuard.
        self._engine = make_engine(self.settings.database.url, fork_safe=True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="primary-services", daemon=True
        )
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            start_services(self.settings, self.duties, self._engine), self._loop
        )
        self._services = started.result(timeout=SERVICES_START_TIMEOUT)
        log.info("primary services started")

    def stop_services(self, deadline: float) -> None:
        """Let running cron executions and deliveries finish, within the drain
        deadline the workers have too."""
        if self._loop is None or self._thread is None:
            return
        stopped = asyncio.run_coroutine_threadsafe(
            stop_services(self._services, deadline - EXIT_GRACE), self._loop
        )
        timeout = max(deadline - time.monotonic(), 0.0)
        try:
            stopped.result(timeout=timeout)
        except TimeoutError:
            # The Supervisor gives no time at all only on an immediate stop
            # (SIGQUIT): there was no drain, so no drain deadline passed.
            if timeout == 0.0:
                log.warning("stopping immediately, not waiting for cron or webhooks")
            else:
                log.error("cron or webhook delivery did not stop by the drain deadline")
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        if self._engine is not None:
            self._engine.dispose()
        log.info("primary services stopped")

    def publish(self, state: ClusterState) -> None:
        if self.state_file is not None:
            write_state(self.state_file, state.as_dict())

    # -- in a forked worker --------------------------------------------------

    def serve_worker(
        self, sock: socket.socket, number: int, ready: Callable[[], None]
    ) -> None:
        """Serve HTTP on sock until SIGTERM; runs in the forked worker."""
        set_role(f"worker {number}", self.settings.instance.id)
        os.environ["INSTANCE_TYPE"] = "worker"
        if self._engine is not None:
            # Forked after the services started: their pool's connections
            # belong to the primary. close=False leaves them open for it.
            self._engine.dispose(close=False)
        if self.worker_duties.runs_cron:
            log.warning("faults.cron_on_workers: this worker runs cron")

        prepare_upload_dir(self.settings.uploads.dir)
        code = serve(
            self.settings,
            self.worker_duties,
            sockets=[sock],
            ready=ready,
            drain_seconds=self.settings.server.cluster.drain_seconds,
        )
        if code != EXIT_OK:
            raise SystemExit(code)


__all__ = ["Primary", "run_cluster"]
