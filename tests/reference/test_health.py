from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from harness.topology import free_port
from reference.db import make_engine


def test_health(client: TestClient, engine: Engine) -> None:
    assert client.get("/_health/live").status_code == 200
    ready = client.get("/_health/ready")
    assert ready.status_code == 200 and ready.json()["revision"] == "0004"

    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0002'"))
    unready = client.get("/_health/ready")
    assert unready.status_code == 503
    assert unready.json()["reason"] == "schema at 0002, head is 0004"


def test_unready_without_the_database(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/cms"
    client.app.state.engine = make_engine(dead)  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="reference.routers.health"):
        unready = client.get("/_health/ready")
    assert unready.status_code == 503
    assert unready.json() == {"status": "unready", "reason": "database unreachable"}
    assert "postgres:***@127.0.0.1" in caplog.text
    assert "secret" not in caplog.text
