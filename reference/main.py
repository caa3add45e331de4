"""Entry point: settings, pinned clock, migrations, then serve.

Single-process mode (today's design) lives here. Cluster mode hands over to
reference.cluster, which reuses the seams below: prepare_schema, serve,
build_app (app.py) and start_services / stop_services (services.py).
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from reference import migrate
from reference.app import build_app
from reference.clock import apply_clock
from reference.config import (
    ConfigError,
    Duties,
    Settings,
    duties_for,
    load_settings,
    role_of,
)
from reference.db import DatabaseUnavailable, make_engine
from reference.exits import (
    EXIT_CONFIG,
    EXIT_DATABASE,
    EXIT_LISTEN,
    EXIT_MIGRATION,
    EXIT_OK,
    EXIT_SERVE_FAILED,
)
from reference.listen import ListenError, bind_listener, start_listening
from reference.logs import setup_logging
from reference.services import start_services, stop_services

SCHEMA_WAIT_SECONDS = 60.0

log = logging.getLogger("reference")

# The seams the cluster supervisor reuses.
__all__ = [
    "build_app",
    "main",
    "prepare_schema",
    "ReadyServer",
    "serve",
    "start_services",
    "stop_services",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="clusterproof-server", description="clusterproof reference CMS server"
    )
    parser.add_argument("--host", help="address to listen on (server.host)")
    parser.add_argument(
        "--port", type=int, help="port to listen on, 0 for any free one (server.port)"
    )
    parser.add_argument("--config", help="TOML settings file (CLUSTERPROOF_CONFIG)")
    parser.add_argument("--instance-id", help="name of this instance (instance.id)")
    return parser.parse_args(argv)


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    # "is not None", not truthiness: --port 0 (any free port) is a value.
    overrides: dict[str, Any] = {}
    given = (("host", args.host), ("port", args.port))
    server = {k: v for k, v in given if v is not None}
    if server:
        overrides["server"] = server
    if args.instance_id is not None:
        overrides["instance"] = {"id": args.instance_id}
    return overrides


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(args.config, **cli_overrides(args))
    except ConfigError as exc:
        print(f"clusterproof-server: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    # Before the engine, app or scheduler exist: they read the wall clock.
    apply_clock(settings.clock)
    setup_logging(role_of(settings), settings.instance.id)
    if settings.server.cluster.enabled:
        from reference.cluster import run_cluster

        return run_cluster(settings)
    if settings.faults.cron_on_workers:
        log.warning("faults.cron_on_workers has no effect outside cluster mode")

    return run_alone(settings)


def run_alone(settings: Settings) -> int:
    """Single-process mode: bind, migrate, listen, serve; an exit code."""
    host, port = settings.server.host, settings.server.port
    try:
        listener = bind_listener(host, port)
    except ListenError as exc:
        log.error("%s", exc)
        return EXIT_LISTEN

    with listener:
        duties = duties_for(settings)
        code = prepare_schema(settings, duties)
        if code != EXIT_OK:
            return code
        try:
            start_listening(listener, host, port)
        except ListenError as exc:
            log.error("%s", exc)
            return EXIT_LISTEN
        return serve(settings, duties, [listener])


def prepare_schema(settings: Settings, duties: Duties) -> int:
    """Pass the start gate, then migrate (or wait for head): an exit code."""
    try:
        engine = make_engine(settings.database.url)
    except DatabaseUnavailable as exc:
        log.error("%s", exc)
        return EXIT_DATABASE
    try:
        migrate.pass_start_gate(settings.instance.id)
        if duties.runs_migrations:
            applied = migrate.upgrade(engine, settings.instance.id)
            log.info("migrations at head (%d applied)", applied)
        else:
            log.info(
                "waiting up to %g s for another instance to migrate",
                SCHEMA_WAIT_SECONDS,
            )
            migrate.wait_for_head(engine, SCHEMA_WAIT_SECONDS)
            log.info("schema at head, migrated by another instance")
    except DatabaseUnavailable as exc:
        log.error("%s", exc)
        return EXIT_DATABASE
    except migrate.MigrationError as exc:
        log.error("%s", exc)
        return EXIT_MIGRATION
    finally:
        engine.dispose()
    return EXIT_OK


class ReadyServer(uvicorn.Server):
    """A uvicorn server that calls ready() once it accepts connections and
    logs the signal that stopped it."""

    def __init__(
        self, config: uvicorn.Config, ready: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        self._ready = ready
        self.stopped_by: int | None = None

    def stop_on(self, signum: int) -> None:
        """Stop gracefully because of signum; safe in a signal handler."""
        if self.stopped_by is None:
            self.stopped_by = signum
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn's own handler for SIGTERM and SIGINT while it runs.
        super().handle_exit(sig, frame)
        self.stop_on(sig)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Logged here, not in the handlers: a handler can run half-way
        # through a write to the log, and must not write to it itself.
        if self.stopped_by is not None:
            name = signal.Signals(self.stopped_by).name
            log.info("%s received, stopping gracefully", name)
        await super().shutdown(sockets=sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        except SystemExit:
            # uvicorn exits with its own code when the app's lifespan fails
            # to start; stop instead, so serve() picks the exit code.
            self.should_exit = True
            return
        if self.started and self._ready is not None:
            self._ready()


def serve(
    settings: Settings,
    duties: Duties,
    sockets: list[socket.socket],
    *,
    ready: Callable[[], None] | None = None,
    drain_seconds: int | None = None,
) -> int:
    """Serve HTTP on listening sockets until SIGTERM, SIGINT or SIGHUP; the
    app's lifespan runs the services.

    ready() is called once the sockets accept. drain_seconds bounds how long
    requests in flight at the signal may take to finish (None: as long as
    they need). A SIGHUP that is ignored on entry (nohup, a cluster worker)
    stays ignored.
    """
    app = build_app(settings, duties)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=drain_seconds,
    )
    server = ReadyServer(config, ready)

    def stop_serving(signum: int, frame: object) -> None:
        server.stop_on(signum)

    # uvicorn handles SIGTERM/SIGINT while it runs, then re-raises the signal
    # to the handler that was there before. This one makes that re-raise (and
    # a signal arriving just before uvicorn starts) a clean stop, exit 0.
    stop_signals = [signal.SIGTERM, signal.SIGINT]
    # uvicorn leaves SIGHUP alone, and by default it kills the process with
    # no drain; a closed terminal sends it. So it stops like SIGTERM. There
    # is no reload on SIGHUP (gunicorn's meaning): settings are read once.
    # Ignored on entry means someone asked for the hangup not to stop us.
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        stop_signals.append(signal.SIGHUP)
    for signum in stop_signals:
        signal.signal(signum, stop_serving)
    address = _address(sockets[0])
    log.info("serving on %s", address)
    server.run(sockets=sockets)
    if not server.started:
        log.error("the app did not start serving on %s; see the lines above", address)
        return EXIT_SERVE_FAILED
    log.info("stopped")
    return EXIT_OK


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"
