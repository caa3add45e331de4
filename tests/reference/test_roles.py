from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from reference.app import build_app
from reference.config import ConfigError, Settings, duties_for, load_settings


def test_content_api_role_does_nothing_but_serve_the_content_api() -> None:
    duties = duties_for(load_settings(server={"role": "content-api"}))
    assert not (duties.runs_migrations or duties.runs_cron or duties.delivers_webhooks)
    assert duties.serves_http and not duties.serves_admin

    in_cluster = duties_for(
        load_settings(server={"role": "content-api", "cluster": {"enabled": True}})
    )
    assert not (in_cluster.runs_migrations or in_cluster.runs_services)


def test_content_api_instance_answers_api_but_not_admin_or_uploads(
    settings: Settings, engine: Engine, admin: dict[str, str]
) -> None:
    content_only = settings.model_copy(
        update={"server": settings.server.model_copy(update={"role": "content-api"})}
    )
    app = build_app(content_only, duties_for(content_only), engine)
    with TestClient(app) as client:
        assert client.post("/api/articles", json={"title": "Hello"}).status_code == 201
        assert client.get("/api/articles").status_code == 200
        assert client.get("/admin/webhooks", headers=admin).status_code == 404
        assert (
            client.post("/upload", files={"file": ("a.txt", b"a")}).status_code == 404
        )
        assert client.get("/_health/live").status_code == 200


def test_unknown_role_is_refused() -> None:
    with pytest.raises(ConfigError, match="server.role"):
        load_settings(server={"role": "api-only"})
