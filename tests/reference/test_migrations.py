from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from alembic import command
from sqlalchemy import func, insert, select

from harness.topology import free_port
from reference import migrate
from reference.db import make_engine
from reference.exits import EXIT_MIGRATION
from reference.models import Article, Event, MigrationRun
from tests.reference.support import wait_for


def _welcomes(engine: object) -> int:
    with engine.connect() as connection:  # type: ignore[attr-defined]
        return connection.scalar(select(func.count()).where(Article.title == "Welcome"))


def _runs(engine: object) -> list[tuple[str, str]]:
    with engine.connect() as connection:  # type: ignore[attr-defined]
        rows = connection.execute(
            select(MigrationRun.revision, MigrationRun.instance).order_by(
                MigrationRun.id
            )
        )
        return [tuple(row) for row in rows]


def test_ledger_and_second_upgrade_is_a_no_op(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert migrate.current_revision(engine) is None
        assert migrate.upgrade(engine, "a") == 4
        assert migrate.upgrade(engine, "a") == 0
        assert migrate.current_revision(engine) == migrate.head_revision() == "0004"
        assert _runs(engine) == [
            ("0001", "a"),
            ("0002", "a"),
            ("0003", "a"),
            ("0004", "a"),
        ]
        assert _welcomes(engine) == 1
    finally:
        engine.dispose()


def test_claims_from_before_the_lease_get_their_event_time(database_url: str) -> None:
    """0004 gives undelivered claims a time, so they can lapse, and goes back."""
    engine = make_engine(database_url)
    created = datetime(2026, 1, 1, 9, tzinfo=UTC)
    try:
        migrate.upgrade(engine, "a", target="0003")
        with engine.begin() as connection:
            for claimed_by, delivered_at in (
                ("dead", None),
                ("b", created),
                (None, None),
            ):
                connection.execute(
                    insert(Event.__table__).values(
                        event="entry.create",
                        model="article",
                        entry_id=1,
                        entry_version=1,
                        payload={},
                        origin="a",
                        created_at=created,
                        claimed_by=claimed_by,
                        delivered_at=delivered_at,
                    )
                )
        assert migrate.upgrade(engine, "a") == 1
        with engine.connect() as connection:
            claimed = connection.execute(
                select(Event.claimed_by, Event.claimed_at).order_by(Event.id)
            ).all()
        assert claimed == [("dead", created), ("b", None), (None, None)]

        downgrade = migrate.alembic_config("a")
        with engine.begin() as connection:
            downgrade.attributes["connection"] = connection
            command.downgrade(downgrade, "0003")
        assert migrate.current_revision(engine) == "0003"
    finally:
        engine.dispose()


def test_stale_read_runs_the_data_migration_twice(database_url: str) -> None:
    """What a second instance does when it read the version before the first
    wrote it: it executes 0002 again (two Welcome articles), then dies on
    0003, whose index already exists."""
    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine, "a")
        stale = migrate.alembic_config("b")
        with engine.begin() as connection:
            stale.attributes["connection"] = connection
            command.stamp(stale, "0001", purge=True)

        assert migrate.upgrade(engine, "b", target="0002") == 1
        assert _welcomes(engine) == 2
        with pytest.raises(migrate.MigrationError, match="^migration failed: "):
            migrate.upgrade(engine, "b")
        assert [run for run in _runs(engine) if run[0] == "0002"] == [
            ("0002", "a"),
            ("0002", "b"),
        ]
    finally:
        engine.dispose()


@pytest.mark.slow
def test_racing_instances_show_the_bug(database_url: str, tmp_path: Path) -> None:
    """Two real instances released by the start gate onto an empty database:
    one runs a revision the other ran too, or one fails with EXIT_MIGRATION."""
    gate = tmp_path / "gate"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CLUSTERPROOF_START_GATE": str(gate),
        "CLUSTERPROOF_UPLOADS__DIR": str(tmp_path / "uploads"),
    }
    instances: dict[str, tuple[subprocess.Popen[str], int]] = {}
    try:
        for name in ("a", "b"):
            port = free_port()
            command_line = [sys.executable, "-m", "reference", "--instance-id", name]
            instances[name] = (
                subprocess.Popen(
                    [*command_line, "--port", str(port)],
                    env=env,
                    cwd=tmp_path,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
                port,
            )
        wait_for(lambda: all(Path(f"{gate}.{n}").exists() for n in instances))
        gate.touch()
        # Settled: every instance either exited or serves HTTP.
        wait_for(
            lambda: all(
                p.poll() is not None or _live(port) for p, port in instances.values()
            ),
            timeout=30,
        )
        engine = make_engine(database_url)
        try:
            runs = _runs(engine)
            welcomes = _welcomes(engine)
        finally:
            engine.dispose()
    finally:
        for process, _ in instances.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in instances.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    failed = {
        n: p.stderr.read()
        for n, (p, _) in instances.items()
        if p.returncode == EXIT_MIGRATION
    }
    twice = [r for r in ("0001", "0002") if sum(run[0] == r for run in runs) >= 2]
    assert twice or failed, runs
    if "0002" in twice:
        assert welcomes >= 2
    for log in failed.values():
        assert "migration failed: " in log


def _live(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/_health/live").status_code == 200
    except httpx.HTTPError:
        return False
