"""What the harness does to a topology while it runs, recorded as a ledger of
its own: the expected events are derived from this ledger, not from anything
the server says about itself."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from harness.clock import format_instant

ALL_EVENTS = ["entry.create", "entry.update", "entry.delete", "entry.publish"]
# Every third article of the write corpus is deleted after its update.
DELETE_EVERY = 3


class WorkloadError(Exception):
    pass


def fresh_connections(base_url: str) -> httpx.Client:
    """A client that opens a new connection per request, so the kernel hands
    each one to whichever worker accepts first, as a browser fleet would."""
    return httpx.Client(
        base_url=base_url,
        timeout=30.0,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


class Workload:
    def __init__(self, base_urls: list[str], admin_token: str, ledger: Path) -> None:
        self.base_urls = base_urls
        self.admin_token = admin_token
        self.ledger = ledger
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def _record(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.records.append(record)
            with self.ledger.open("a") as ledger:
                ledger.write(json.dumps(record) + "\n")

    def call(
        self, client: httpx.Client, method: str, path: str, **kwargs: Any
    ) -> dict[str, Any] | None:
        """One request, recorded whatever happens; None when it failed."""
        record: dict[str, Any] = {"method": method, "path": path}
        started = time.monotonic()
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            record.update(status=None, error=f"{type(exc).__name__}: {exc}")
            self._record(record)
            return None
        finally:
            record["seconds"] = round(time.monotonic() - started, 4)
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {"unparsed": response.text[:200]}
        record.update(
            status=response.status_code,
            instance=response.headers.get("x-clusterproof-instance"),
            pid=response.headers.get("x-clusterproof-pid"),
            body=body,
        )
        # Entries live under /api; an admin body's id (a subscription's) is not one.
        if path.startswith("/api/") and isinstance(body, dict) and "id" in body:
            record["entry_id"] = body["id"]
            record["entry_version"] = body.get("version")
        self._record(record)
        return body if response.status_code < 400 and isinstance(body, dict) else None

    def _setup(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        with fresh_connections(self.base_urls[0]) as client:
            body = self.call(client, method, path, **kwargs)
        if body is None:
            last = self.records[-1]
            raise WorkloadError(
                f"{method} {path} failed: {last.get('error') or last.get('status')}"
            )
        return body

    def subscribe(self, url: str) -> dict[str, Any]:
        return self._setup(
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
        return self._setup("POST", "/api/articles", json=payload)

    def writes(self, count: int, concurrency: int) -> None:
        """The write corpus: article i is created, updated, and, for every
        third, deleted; articles go to the instances in turn and run
        ``concurrency`` at a time."""
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(self._write_one, range(count)))

    def _write_one(self, number: int) -> None:
        base_url = self.base_urls[number % len(self.base_urls)]
        with fresh_connections(base_url) as client:
            created = self.call(
                client,
                "POST",
                "/api/articles",
                json={"title": f"Note {number}", "body": f"Body of note {number}."},
            )
            if created is None:
                return
            path = f"/api/articles/{created['id']}"
            updated = self.call(
                client, "PUT", path, json={"title": f"Note {number} (edited)"}
            )
            if updated is not None and number % DELETE_EVERY == 0:
                self.call(client, "DELETE", path)

    def expected_events(self) -> Iterator[tuple[str, str, int, int]]:
        """One event per successful write, as (event, model, id, version)."""
        names = {"POST": "entry.create", "PUT": "entry.update"}
        versions: dict[int, int] = {}
        for record in self.records:
            if not record["path"].startswith("/api/articles"):
                continue
            status = record.get("status")
            if status is None or status >= 400:
                continue
            if record["method"] in names:
                entry, version = record["entry_id"], record["entry_version"]
                versions[entry] = version
                yield names[record["method"]], "article", entry, version
            elif record["method"] == "DELETE":
                entry = int(record["path"].rsplit("/", 1)[1])
                yield "entry.delete", "article", entry, versions[entry]

    def failed_requests(self) -> list[dict[str, Any]]:
        return [
            r for r in self.records if r.get("status") is None or r["status"] >= 500
        ]

    def serving_pids(self) -> set[int]:
        return {int(r["pid"]) for r in self.records if r.get("pid")}
