"""What the harness does to a topology while it runs, recorded as a ledger of
its own: the expected events are derived from this ledger, not from anything
the server says about itself."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from harness.clock import format_instant

ALL_EVENTS = ["entry.create", "entry.update", "entry.delete", "entry.publish"]


class WorkloadError(Exception):
    pass


class Workload:
    def __init__(self, base_url: str, admin_token: str, ledger_path: Path) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=10.0)
        self.admin_token = admin_token
        self.ledger_path = ledger_path
        self.records: list[dict[str, Any]] = []

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.client.request(method, path, **kwargs)
        record = {
            "method": method,
            "path": path,
            "status": response.status_code,
            "instance": response.headers.get("x-clusterproof-instance"),
            "pid": response.headers.get("x-clusterproof-pid"),
        }
        body = response.json() if response.content else {}
        if isinstance(body, dict) and "id" in body:
            record["entry_id"] = body["id"]
            record["entry_version"] = body.get("version")
        self.records.append(record)
        with self.ledger_path.open("a") as ledger:
            ledger.write(json.dumps(record) + "\n")
        if response.status_code >= 400:
            raise WorkloadError(
                f"{method} {path} answered {response.status_code}: "
                f"{response.text[:200]}"
            )
        return body if isinstance(body, dict) else {}

    def subscribe(self, url: str) -> dict[str, Any]:
        return self._call(
            "POST",
            "/admin/webhooks",
            json={"url": url, "events": ALL_EVENTS},
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )

    def create_article(
        self, title: str, publish_at: datetime | None = None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"title": title, "body": f"{title}."}
        if publish_at is not None:
            payload["publish_at"] = format_instant(publish_at)
        return self._call("POST", "/api/articles", json=payload)
