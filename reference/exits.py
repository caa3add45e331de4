"""Exit codes of clusterproof-server, one per reason it stops.

A supervisor (systemd, Kubernetes, the harness) can tell from the code
alone whether restarting could help: only EXIT_OK and EXIT_ERROR may be
worth a blind restart; the others need a person to fix something first.
"""

from __future__ import annotations

EXIT_OK = 0  # stopped by SIGTERM, SIGINT or SIGHUP
EXIT_ERROR = 1  # an unexpected error: Python's own code for an uncaught exception
EXIT_CONFIG = 2  # a setting or argument is invalid (argparse exits 2 as well)
EXIT_WORKER_BOOT = 3  # cluster workers kept failing to boot
EXIT_SERVICES_START = 4  # cluster primary: cron or webhook delivery did not start
EXIT_DATABASE = 5  # the database cannot be reached or opened
EXIT_MIGRATION = 6  # a migration failed, or the schema never reached head
EXIT_LISTEN = 7  # the port is taken or the host is not an address of ours
EXIT_SERVE_FAILED = 8  # the app did not start serving (its lifespan failed)
EXIT_ORPHANED = 9  # a cluster worker whose primary died before it could serve

__all__ = [
    "EXIT_CONFIG",
    "EXIT_DATABASE",
    "EXIT_ERROR",
    "EXIT_LISTEN",
    "EXIT_MIGRATION",
    "EXIT_OK",
    "EXIT_ORPHANED",
    "EXIT_SERVE_FAILED",
    "EXIT_SERVICES_START",
    "EXIT_WORKER_BOOT",
]
