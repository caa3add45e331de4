"""Sessions: `reproduce` shows the bug, `verify-cluster` is the regression
gate for cluster mode, `load` is the load benchmark (cluster mode swept
beside gunicorn and uvicorn), `tests` runs the test suite, `lint` checks
style and types.

`reproduce`, `verify-cluster` and `load` exit with the harness's own code
(0 every claim held, 1 a claim failed, 2 the harness could not run), so
scripts can tell the cases apart.
"""

from __future__ import annotations

import os
import signal
import subprocess

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_venv = "yes"


def _harness(session: nox.Session, *args: str) -> None:
    session.install("-e", ".")
    command = [f"{session.bin}/clusterproof", *args]
    # nox marks a variable it wants unset with None, which Popen refuses.
    env = {k: v for k, v in {**os.environ, **session.env}.items() if v is not None}
    harness = subprocess.Popen([*command, *session.posargs], env=env)

    # A stop signal goes to the harness, and nox waits while it stops every
    # instance: subprocess.call would kill it 0.25 s after a Ctrl-C and leave
    # its instances serving. The harness stops once, whatever repeats.
    def forward(signum: int, frame: object) -> None:
        harness.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    code = harness.wait()
    if code:
        # nox reports every failure as 1; keep the harness's 1/2 distinction.
        raise SystemExit(code)


@nox.session
def reproduce(session: nox.Session) -> None:
    """Run two instances on one database and show every duplicate."""
    _harness(session, "run", "--suite", "reproduce")


@nox.session(name="verify-cluster")
def verify_cluster(session: nox.Session) -> None:
    """The regression gate: every cluster-mode claim must hold."""
    _harness(session, "run", "--suite", "verify-cluster")


@nox.session
def load(session: nox.Session) -> None:
    """The load benchmark; options after --, e.g. -- --duration 30 --rounds 3."""
    _harness(session, "load")


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-e", ".[test]", "ruff", "mypy")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "reference", "harness")
