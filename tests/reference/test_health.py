from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text


def test_health(client: TestClient, engine: Engine) -> None:
    assert client.get("/_health/live").status_code == 200
    ready = client.get("/_health/ready")
    assert ready.status_code == 200 and ready.json()["revision"] == "0004"

    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0002'"))
    unready = client.get("/_health/ready")
    assert unready.status_code == 503
    assert unready.json()["reason"] == "schema at 0002, head is 0004"
