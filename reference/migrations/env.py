"""Alembic environment: runs on the connection reference.migrate hands over."""

from __future__ import annotations

import os
import socket
from typing import Any

from alembic import context
from sqlalchemy import insert

from reference.db import make_engine
from reference.models import MigrationRun, utc_now

config = context.config


def _ledger_hook(instance: str) -> Any:
    """An on_version_apply hook writing each executed revision to migration_runs.

    Alembic calls it right after a revision's upgrade ran, on the same
    connection, so a revision and its ledger row commit together. A revision
    starts where the previous one finished.
    """
    started = {"at": utc_now()}

    def record(*, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        finished = utc_now()
        ctx.connection.execute(
            insert(MigrationRun).values(
                revision=step.up_revision_id,
                instance=instance,
                pid=os.getpid(),
                host=socket.gethostname(),
                started_at=started["at"],
                finished_at=finished,
            )
        )
        started["at"] = finished
        config.attributes["applied"] = config.attributes.get("applied", 0) + 1

    return record


def run_migrations(connection: Any) -> None:
    context.configure(
        connection=connection,
        transaction_per_migration=True,
        on_version_apply=_ledger_hook(config.attributes.get("instance", "alembic")),
    )
    # Limitation: no lock is taken here on purpose. Two instances starting
    # together both read "no revision" and both migrate: the bug this project
    # reproduces before the fix takes a database lock.
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    engine = make_engine(
        os.environ.get("DATABASE_URL", "sqlite:///./data/clusterproof.db")
    )
    with engine.connect() as standalone:
        run_migrations(standalone)
        standalone.commit()
    engine.dispose()
