"""The database a topology shares: created empty for each scenario run, read
back for the server's ledgers once the instances have stopped, then dropped.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from harness.clock import format_instant

# The server's ledger tables, read after the run (see DESIGN.md: ledger).
LEDGER_TABLES = ("cron_executions", "migration_runs", "events", "deliveries")


class DatabaseError(Exception):
    pass


def postgres_url(text: str) -> URL:
    """'postgresql://postgres@127.0.0.1/postgres' -> a psycopg 3 URL."""
    try:
        url = make_url(text)
    except sa.exc.ArgumentError:
        raise DatabaseError(
            f"--database must be a PostgreSQL URL like "
            f"postgresql://postgres@127.0.0.1:5432/postgres, got {text!r}"
        ) from None
    if url.get_backend_name() != "postgresql":
        raise DatabaseError(
            f"--database must be a PostgreSQL URL (SQLite is the default), "
            f"got {url.get_backend_name()!r}"
        )
    return url.set(drivername="postgresql+psycopg")


def _server_engine(url: URL) -> sa.Engine:
    return sa.create_engine(
        url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )


def check_reachable(url: URL) -> None:
    engine = _server_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseError(
            f"database {url.render_as_string(hide_password=True)} is unreachable "
            f"({reason}); start PostgreSQL or fix --database"
        ) from None
    finally:
        engine.dispose()


@contextmanager
def prepared(server: str | None, workdir: Path, label: str) -> Iterator[str]:
    """Yield the URL of a new, empty database for one scenario run.

    With no server, an SQLite file in the scenario folder; with a PostgreSQL
    server URL, a database created on that server and dropped afterwards.
    """
    if server is None:
        path = (workdir / "cms.db").resolve()
        for stale in workdir.glob("cms.db*"):
            stale.unlink()
        yield f"sqlite:///{path}"
        return

    url = postgres_url(server)
    check_reachable(url)
    name = f"clusterproof_{label.replace('-', '_')}_{secrets.token_hex(4)}"
    engine = _server_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return format_instant(aware)
    return value


def _instant_text(value: Any) -> Any:
    """SQLite hands datetimes back as text; give every ledger one format."""
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-":
        try:
            return _plain(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return value
    return _plain(value)


def read_ledgers(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of the server's ledger tables; a table that was never
    created (migrations failed first) reads as empty."""
    engine = sa.create_engine(url)
    ledgers: dict[str, list[dict[str, Any]]] = {}
    try:
        existing = set(sa.inspect(engine).get_table_names())
        with engine.connect() as conn:
            for table in LEDGER_TABLES:
                if table not in existing:
                    ledgers[table] = []
                    continue
                rows = conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY id"))
                ledgers[table] = [
                    {key: _instant_text(value) for key, value in row._mapping.items()}
                    for row in rows
                ]
    finally:
        engine.dispose()
    return ledgers
