"""Engine and sessions: SQLite by default, PostgreSQL when DATABASE_URL says so."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

SQLITE_BUSY_TIMEOUT_MS = 10_000
FORK_WAIT_SECONDS = SQLITE_BUSY_TIMEOUT_MS / 1000 + 5

log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """The database cannot be reached or opened; the message is one line for
    people, with the password hidden."""


def unavailable(url: URL, reason: BaseException) -> DatabaseUnavailable:
    """The DatabaseUnavailable for url, naming the driver's reason."""
    if isinstance(reason, DBAPIError) and reason.orig is not None:
        reason = reason.orig  # without SQLAlchemy's wrapping and its link
    lines = str(reason).strip().splitlines()
    return DatabaseUnavailable(
        f"cannot use database {url.render_as_string(hide_password=True)} "
        f"({lines[0] if lines else type(reason).__name__}); "
        "start or create the database, or fix DATABASE_URL"
    )


def connect(engine: Engine) -> Connection:
    """engine.connect(), raising DatabaseUnavailable when it cannot."""
    try:
        return engine.connect()
    except DBAPIError as exc:
        raise unavailable(engine.url, exc) from None


class ForkGuard:
    """Keeps fork() and open SQLite connections apart in a process that forks.

    SQLite keeps its bookkeeping of file locks in process memory, shared by
    every connection to one file. A child forked while the parent has a
    connection open inherits that bookkeeping without the locks themselves,
    and its own connections then find the database "locked" until their busy
    timeout runs out, on every write; a child forked while another thread is
    inside SQLite can inherit SQLite's own mutexes held and hang. SQLite's
    advice is never to carry a connection across fork(); this guard enforces
    it for the engines built with ``fork_safe=True``: they keep no idle
    connections (NullPool), a fork waits until their last connection has
    closed, and no connection opens while the fork runs. Each use of such an
    engine is one short unit of work, so a fork waits milliseconds.
    """

    def __init__(self) -> None:
        self.idle = threading.Condition()
        self.open = 0
        os.register_at_fork(
            before=self._before_fork,
            after_in_parent=lambda: self.idle.release(),
            after_in_child=self._forget,
        )

    def _before_fork(self) -> None:
        self.idle.acquire()
        # A unit of work lasts milliseconds; one that holds its connection
        # past the limit (a busy database) must not stop respawns for good.
        if not self.idle.wait_for(lambda: self.open == 0, FORK_WAIT_SECONDS):
            log.warning(
                "forking with %d SQLite connection(s) still open after %.0f s",
                self.open,
                FORK_WAIT_SECONDS,
            )

    def _forget(self) -> None:
        # The child holds none of the parent's connections, and the lock was
        # held by the parent's forking thread: start afresh.
        self.idle = threading.Condition()
        self.open = 0


_fork_guard = ForkGuard()


class _GuardedConnection(sqlite3.Connection):
    """An SQLite connection that ForkGuard counts from the moment it opens
    until its close has returned (SQLAlchemy's pool events fire before the
    close, while the connection is still inside SQLite)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with _fork_guard.idle:
            super().__init__(*args, **kwargs)
            _fork_guard.open += 1
        self._counted = True

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.__dict__.pop("_counted", False):
                with _fork_guard.idle:
                    _fork_guard.open -= 1
                    _fork_guard.idle.notify_all()


def make_engine(url: str, fork_safe: bool = False) -> Engine:
    """An engine for url; connects lazily, so it is safe to build before a fork.

    Raises DatabaseUnavailable if the folder of an SQLite file cannot be made.

    fork_safe: this process forks while the engine is in use (a cluster
    primary running cron); see ForkGuard.
    """
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        # psycopg 3 is the driver we ship; SQLAlchemy would pick psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)

    if parsed.database and parsed.database != ":memory:":
        try:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise unavailable(parsed, exc) from None
    if not fork_safe:
        engine = create_engine(parsed, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _tune_sqlite)
        return engine

    engine = create_engine(
        parsed,
        connect_args={"check_same_thread": False, "factory": _GuardedConnection},
        poolclass=NullPool,
    )
    event.listen(engine, "connect", _tune_sqlite)
    return engine


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; busy_timeout makes a second
    # process wait for the write lock instead of failing with "locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
