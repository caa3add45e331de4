"""Fixtures for the reference server: a migrated database and a test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from harness.topology import free_port
from reference import migrate
from reference.app import build_app
from reference.config import Duties, Settings, load_settings
from reference.db import make_engine
from tests.reference.support import Inbox

ADMIN_TOKEN = "test-admin-token"
HTTP_ONLY = Duties(
    runs_migrations=False, runs_cron=False, delivers_webhooks=False, serves_http=True
)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        database={"url": database_url},
        instance={"id": "test-a"},
        admin={"token": ADMIN_TOKEN},
        uploads={"dir": str(tmp_path / "uploads"), "max_bytes": 1024},
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """The settings' database, migrated to head."""
    engine = make_engine(settings.database.url)
    migrate.upgrade(engine, settings.instance.id)
    yield engine
    engine.dispose()


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """The app without cron or webhook delivery: requests only."""
    app = build_app(settings, HTTP_ONLY, engine)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def smtp_inbox() -> Iterator[Inbox]:
    """An SMTP server on a free port; its port is smtp_inbox.port."""
    inbox = Inbox()
    inbox.port = free_port()  # type: ignore[attr-defined]
    server = Controller(inbox, hostname="127.0.0.1", port=inbox.port)  # type: ignore[attr-defined]
    server.start()
    try:
        yield inbox
    finally:
        server.stop()
