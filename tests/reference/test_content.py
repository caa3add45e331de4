from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from reference.models import Article, Event
from reference.routers import MAX_ERRORS
from tests.reference.support import strict_json


def test_crud_writes_one_event_per_change(
    client: TestClient, admin: dict[str, str]
) -> None:
    created = client.post("/api/articles", json={"title": "Hello", "body": "b"})
    assert created.status_code == 201
    article = created.json()
    assert article["version"] == 1 and article["created_at"].endswith("Z")
    path = f"/api/articles/{article['id']}"

    assert client.get(path).json() == article
    replaced = client.put(path, json={"title": "Hello 2", "body": "c"}).json()
    patched = client.patch(path, json={"publish_at": "2026-01-01T10:00:00+01:00"})
    assert (replaced["version"], patched.json()["version"]) == (2, 3)
    assert patched.json()["publish_at"] == "2026-01-01T09:00:00Z"
    assert patched.json()["title"] == "Hello 2"
    assert client.delete(path).status_code == 204
    assert client.get(path).status_code == 404

    events = client.get("/admin/events", headers=admin).json()
    assert [(e["event"], e["entry_id"], e["entry_version"]) for e in events] == [
        ("entry.create", article["id"], 1),
        ("entry.update", article["id"], 2),
        ("entry.update", article["id"], 3),
        ("entry.delete", article["id"], 3),
    ]
    assert {e["origin"] for e in events} == {"test-a"}
    assert events[1]["payload"]["entry"] == replaced


BAD_REQUESTS = [
    ("post", "/api/articles", {"title": ""}),
    ("post", "/api/articles", {"title": "x" * 256}),
    ("post", "/api/articles", {"title": 5}),
    ("post", "/api/articles", {"title": "nul\x00"}),
    ("post", "/api/articles", {"title": "t", "publish_at": "tomorrow"}),
    ("post", "/api/articles", {"title": "t", "publish_at": "0001-01-01T00:00+01"}),
    ("post", "/api/articles", {"title": "t", "extra": 1}),
    ("post", "/api/articles", [1, 2]),
    ("patch", "/api/articles/2", {"title": None}),
    ("get", "/api/articles/0", None),
    ("get", "/api/articles/99999999999999999999", None),
    ("get", "/api/articles/abc", None),
    ("get", "/api/articles?page=0", None),
    ("get", "/api/articles?page_size=101", None),
    ("get", "/api/articles?published=perhaps", None),
    ("get", "/api/articles?title=%00", None),
]


def test_bad_input_is_4xx_never_500(client: TestClient) -> None:
    client.post("/api/articles", json={"title": "exists"})
    for method, path, body in BAD_REQUESTS:
        response = client.request(method, path, json=body)
        assert response.status_code in (400, 422), (path, body, response.text)
        assert response.json()["detail"]


UNSAFE_INPUTS = {
    "nan": b'{"title": "x", "body": NaN}',
    "infinity": b'{"title": "x", "body": 1e400}',
    "infinite publish_at": b'{"title": "x", "publish_at": 1e400}',
    "lone surrogate": b'{"title": "x", "body": "\\ud800"}',
    "surrogate field name": b'{"title": "x", "\\ud800": 1}',
    "100 KB title": b'{"title": "' + b"x" * 100_000 + b'"}',
    "100 KB field name": b'{"title": "x", "' + b"k" * 100_000 + b'": 1}',
}


@pytest.mark.parametrize("body", UNSAFE_INPUTS.values(), ids=UNSAFE_INPUTS.keys())
def test_422_is_small_standard_json_whatever_the_input(
    client: TestClient, body: bytes
) -> None:
    response = client.post(
        "/api/articles", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert len(response.content) < 1000
    (error,) = strict_json(response.content)["detail"]
    assert set(error) == {"type", "loc", "msg"}
    assert error["loc"][0] == "body" and error["msg"]


def test_422_lists_a_bounded_number_of_errors(client: TestClient) -> None:
    extra = {f"extra{n}": n for n in range(MAX_ERRORS + 5)}
    response = client.post("/api/articles", json={"title": "x", **extra})
    assert response.status_code == 422
    body = response.json()
    assert [e["loc"] for e in body["detail"]] == [
        ["body", f"extra{n}"] for n in range(MAX_ERRORS)
    ]
    assert body["errors_left_off"] == 5


def test_422_of_a_query_and_a_path_does_not_echo_them(client: TestClient) -> None:
    for path in (
        "/api/articles?title=" + "x" * 5000,
        "/api/articles?page=" + "9" * 5000,
        "/api/articles/" + "9" * 5000,
    ):
        response = client.get(path)
        assert response.status_code == 422
        assert len(response.content) < 1000


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/api/articles", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_missing_article_is_404(client: TestClient) -> None:
    for method in ("get", "delete"):
        response = client.request(method, "/api/articles/424242")
        assert response.status_code == 404
        assert response.json() == {"detail": "article 424242 does not exist"}
    assert client.put("/api/articles/424242", json={"title": "t"}).status_code == 404


def test_pagination_and_filters(client: TestClient) -> None:
    for n in range(7):
        client.post("/api/articles", json={"title": f"Post {n} 100%"})
    client.patch("/api/articles/3", json={"publish_at": None})

    page = client.get("/api/articles", params={"page": 2, "page_size": 3}).json()
    assert [a["id"] for a in page["data"]] == [4, 5, 6]  # 1 is Welcome
    assert page["meta"] == {"page": 2, "page_size": 3, "page_count": 3, "total": 8}
    beyond = client.get("/api/articles", params={"page": 9, "page_size": 3}).json()
    assert beyond["data"] == [] and beyond["meta"]["total"] == 8

    found = client.get("/api/articles", params={"title": "post 1 100%"}).json()
    assert [a["title"] for a in found["data"]] == ["Post 1 100%"]
    # % is matched literally, not as a wildcard.
    assert client.get("/api/articles", params={"title": "t%"}).json()["data"] == []
    unpublished = client.get("/api/articles", params={"published": False}).json()
    assert unpublished["meta"]["total"] == 8
    published = client.get("/api/articles", params={"published": True}).json()
    assert published["meta"]["total"] == 0


def test_failed_write_leaves_no_event(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("outbox write failed")

    monkeypatch.setattr("reference.routers.content.record_event", broken)
    response = client.post("/api/articles", json={"title": "lost"})
    assert response.status_code == 500
    assert response.headers["x-clusterproof-instance"] == "test-a"

    with engine.connect() as connection:
        titles = connection.scalars(select(Article.title)).all()
        events = connection.scalar(select(func.count(Event.id)))
    assert titles == ["Welcome"] and events == 0


def test_serving_headers_on_every_response(client: TestClient) -> None:
    import os

    for response in (
        client.get("/_health/live"),
        client.get("/api/articles/0"),
        client.get("/nowhere"),
        client.get("/admin/events"),
    ):
        assert response.headers["x-clusterproof-instance"] == "test-a"
        assert response.headers["x-clusterproof-pid"] == str(os.getpid())
