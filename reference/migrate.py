"""Schema migrations at start-up, the start gate, and waiting for the schema."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from reference.db import DatabaseUnavailable, connect

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
START_GATE_ENV = "CLUSTERPROOF_START_GATE"
START_GATE_TIMEOUT = 30.0

log = logging.getLogger(__name__)


class MigrationError(Exception):
    """Migrating failed, or the schema never reached head."""


def alembic_config(instance: str) -> Config:
    # Configured in code, so it works the same from a clone and from an
    # installed wheel (the scripts are package data beside this module).
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["instance"] = instance
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("-")).get_current_head()
    assert head is not None, "reference/migrations has no revisions"
    return head


def current_revision(engine: Engine) -> str | None:
    """The schema's revision; raises DatabaseUnavailable if it cannot connect."""
    with connect(engine) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, instance: str, target: str = "head") -> int:
    """Upgrade to target as instance; returns how many revisions this call ran.

    Raises DatabaseUnavailable if it cannot connect, MigrationError if a
    revision fails.
    """
    config = alembic_config(instance)
    with connect(engine) as connection:
        config.attributes["connection"] = connection
        try:
            command.upgrade(config, target)
            connection.commit()
        except Exception as exc:
            raise MigrationError(f"migration failed: {_first_line(exc)}") from exc
    return int(config.attributes.get("applied", 0))


def wait_for_head(engine: Engine, timeout: float, poll: float = 0.2) -> None:
    """Block until another instance has migrated the schema to head.

    Raises DatabaseUnavailable if the database refused the last attempt to
    connect, MigrationError if it answered but never reached head.
    """
    head = head_revision()
    deadline = time.monotonic() + timeout
    current: str | None = None
    refused: DatabaseUnavailable | None = None
    while time.monotonic() < deadline:
        refused = None
        try:
            current = current_revision(engine)
        except DatabaseUnavailable as exc:  # it may not accept connections yet
            current, refused = None, exc
        except Exception:  # e.g. SQLite locked while the other one migrates
            current = None
        if current == head:
            return
        time.sleep(poll)
    if refused is not None:
        raise refused
    raise MigrationError(
        f"schema not at head after {timeout:g} s (at {current}, head {head}); "
        "start a primary instance or run migrations first"
    )


def pass_start_gate(instance: str, timeout: float = START_GATE_TIMEOUT) -> None:
    """Test hook: announce readiness, then wait for the harness to open the gate.

    With CLUSTERPROOF_START_GATE=<path>, create "<path>.<instance>" and wait
    until <path> exists, so several instances migrate at the same moment.
    """
    gate = os.environ.get(START_GATE_ENV)
    if not gate:
        return
    Path(f"{gate}.{instance}").touch()
    deadline = time.monotonic() + timeout
    while not Path(gate).exists():
        if time.monotonic() >= deadline:
            raise MigrationError(
                f"start gate {gate!r} did not open within {timeout:g} s; "
                f"create it or unset {START_GATE_ENV}"
            )
        time.sleep(0.01)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
