from __future__ import annotations

from fastapi.testclient import TestClient

from reference.models import URL_MAX_LENGTH
from tests.reference.support import strict_json

LEDGERS = [
    "/admin/webhooks",
    "/admin/events",
    "/admin/deliveries",
    "/admin/cron-executions",
    "/admin/migration-runs",
]
WRONG = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdA=="}]


def test_admin_needs_the_token(client: TestClient, admin: dict[str, str]) -> None:
    for path in LEDGERS:
        for headers in WRONG:
            response = client.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.headers["www-authenticate"] == "Bearer"
        assert client.get(path, headers=admin).status_code == 200
    assert client.delete("/admin/webhooks/1").status_code == 401


def test_subscriptions_are_stored(client: TestClient, admin: dict[str, str]) -> None:
    created = client.post(
        "/admin/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["entry.publish"]},
        headers=admin,
    )
    assert created.status_code == 201
    subscription = created.json()
    assert subscription["enabled"] is True
    assert client.get("/admin/webhooks", headers=admin).json() == [subscription]

    path = f"/admin/webhooks/{subscription['id']}"
    assert client.delete(path, headers=admin).status_code == 204
    assert client.delete(path, headers=admin).status_code == 404
    assert client.get("/admin/webhooks", headers=admin).json() == []


def test_bad_subscription_is_422(client: TestClient, admin: dict[str, str]) -> None:
    for body in [
        {"url": "ftp://x", "events": ["entry.create"]},
        {"url": "http://x", "events": ["entry.explode"]},
        {"url": "http://x", "events": []},
        {"url": "http://x", "events": ["entry.create"], "enabled": "maybe"},
    ]:
        response = client.post("/admin/webhooks", json=body, headers=admin)
        assert response.status_code == 422, body


def test_subscription_url_must_fit_its_column(
    client: TestClient, admin: dict[str, str]
) -> None:
    """PostgreSQL refuses a longer url, so it must be a 422, not a 500."""
    longest = "http://x/" + "a" * (URL_MAX_LENGTH - len("http://x/"))
    for url, status in [(longest, 201), (longest + "a", 422)]:
        response = client.post(
            "/admin/webhooks",
            json={"url": url, "events": ["entry.create"]},
            headers=admin,
        )
        assert response.status_code == status, len(url)
    assert f"at most {URL_MAX_LENGTH} characters" in response.text


def test_unsafe_subscription_is_a_small_422(
    client: TestClient, admin: dict[str, str]
) -> None:
    for body in [
        b'{"url": "http://x", "events": ["entry.create"], "enabled": NaN}',
        b'{"url": "http://x", "events": ["\\ud800"]}',
        b'{"url": "http://x", "events": ["' + b"x" * 100_000 + b'"]}',
    ]:
        response = client.post(
            "/admin/webhooks",
            content=body,
            headers={**admin, "content-type": "application/json"},
        )
        assert response.status_code == 422, body[:80]
        assert len(response.content) < 1000
        assert strict_json(response.content)["detail"]
    assert "use some of ['entry.create'" in response.text


def test_migration_ledger(client: TestClient, admin: dict[str, str]) -> None:
    runs = client.get("/admin/migration-runs", headers=admin).json()
    assert [run["revision"] for run in runs] == ["0001", "0002", "0003", "0004"]
    assert {run["instance"] for run in runs} == {"test-a"}
    assert all(run["started_at"] <= run["finished_at"] for run in runs)
