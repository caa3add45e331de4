from __future__ import annotations

from harness.equivalence import combine, differences, responses


def record(method: str, path: str, status: int, body: dict) -> dict:
    return {"method": method, "path": path, "status": status, "body": body, "pid": "9"}


def test_responses_set_aside_ids_stamps_and_serving_process() -> None:
    one = record(
        "PUT", "/api/articles/7", 200, {"id": 7, "title": "A", "updated_at": "x"}
    )
    other = record(
        "PUT", "/api/articles/8", 200, {"id": 8, "title": "A", "updated_at": "y"}
    ) | {"pid": "10"}
    assert responses([one]) == responses([other])
    assert responses([one])[0]["request"] == "PUT /api/articles/{id}"


def test_a_different_status_or_body_is_a_difference() -> None:
    base = responses([record("POST", "/api/articles", 201, {"title": "A"})])
    changed = responses([record("POST", "/api/articles", 500, {"title": "A"})])
    rows = differences("cluster 4 workers", base, changed, "response")
    assert [(r["variant"], r["position"]) for r in rows] == [("cluster 4 workers", 0)]
    assert rows[0]["observed"]["status"] == 500


def test_a_missing_or_extra_item_is_a_difference() -> None:
    assert len(differences("v", ["a", "b"], ["a"], "emails")) == 1
    assert len(differences("v", ["a"], ["a", "a"], "webhooks")) == 1
    assert differences("v", ["a", "b"], ["a", "b"], "emails") == []


def test_combine_adds_failures_concatenates_lists_and_keeps_the_largest() -> None:
    combined = combine(
        [
            {"duplicates": 1, "lost": 0, "emails_per_occurrence[d]": [1], "emails": 1},
            {"duplicates": 2, "lost": 1, "emails_per_occurrence[d]": [2], "emails": 2},
        ]
    )
    assert combined["duplicates"] == 3
    assert combined["lost"] == 1
    assert combined["emails_per_occurrence[d]"] == [1, 2]
    assert combined["emails"] == 2
