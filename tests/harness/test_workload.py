"""The harness's own ledger of what it did, driven against a fake server."""

from __future__ import annotations

from pathlib import Path

import httpx

from harness.workload import Workload


def answer(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/admin/webhooks":
        return httpx.Response(201, json={"id": 1, "url": "http://sink/hooks"})
    return httpx.Response(201, json={"id": 5, "version": 1, "title": "t"})


def test_only_content_entries_are_recorded_as_entries(tmp_path: Path) -> None:
    workload = Workload(["http://cms"], "token", tmp_path / "workload.jsonl")
    with httpx.Client(
        base_url="http://cms", transport=httpx.MockTransport(answer)
    ) as client:
        workload.call(client, "POST", "/admin/webhooks", json={})
        workload.call(client, "POST", "/api/articles", json={"title": "t"})
    subscription, article = workload.records
    assert "entry_id" not in subscription
    assert (article["entry_id"], article["entry_version"]) == (5, 1)
    assert list(workload.expected_events()) == [("entry.create", "article", 5, 1)]
    assert len((tmp_path / "workload.jsonl").read_text().splitlines()) == 2
