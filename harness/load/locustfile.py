"""Locust workloads on the content API (/api) only, run by harness.load.

Read by `locust -f` in its own process (gevent patches everything there, so
the harness never imports this module). The harness passes its settings in
the environment:

    CLUSTERPROOF_LOAD_MIX       read | write
    CLUSTERPROOF_LOAD_SEED      whole number; each user's choices follow it
    CLUSTERPROOF_LOAD_IDS       first-last ids of the seeded articles
    CLUSTERPROOF_LOAD_HOSTS     optional comma list of base URLs; users are
                                spread over them round-robin
    CLUSTERPROOF_LOAD_SERVED    folder for served-<pid>.json: requests per
                                serving process, from x-clusterproof-pid
    CLUSTERPROOF_LOAD_SUMMARY   file for the final Aggregated figures
"""

from __future__ import annotations

import itertools
import json
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

from harness.load.corpus import PAGE_SIZE, WORDS

MIX = os.environ.get("CLUSTERPROOF_LOAD_MIX", "read")
SEED = int(os.environ.get("CLUSTERPROOF_LOAD_SEED", "1"))
FIRST_ID, LAST_ID = (
    int(part) for part in os.environ.get("CLUSTERPROOF_LOAD_IDS", "1-1").split("-")
)
HOSTS = [h for h in os.environ.get("CLUSTERPROOF_LOAD_HOSTS", "").split(",") if h]
SERVED_DIR = os.environ.get("CLUSTERPROOF_LOAD_SERVED")
SUMMARY = os.environ.get("CLUSTERPROOF_LOAD_SUMMARY")

# Operations and their weights: reads list a page, fetch one article, filter
# by a title word; writes create and update (each raises a webhook event).
READS = {"list_page": 4, "fetch_one": 5, "filter_title": 2}
WRITES = {"create_article": 1, "update_article": 2}

served: Counter[str] = Counter()
_user_numbers = itertools.count()


@events.request.add_listener
def _count_serving_process(response: Any = None, **_: Any) -> None:
    pid = getattr(response, "headers", None) and response.headers.get(
        "x-clusterproof-pid"
    )
    served[pid or "unknown"] += 1


@events.quitting.add_listener
def _write_served(environment: Environment, **_: Any) -> None:
    # Every process that ran users writes its own file (a master runs none),
    # so no count has to travel through Locust's master/worker messages.
    if SERVED_DIR and served:
        path = Path(SERVED_DIR) / f"served-{os.getpid()}.json"
        path.write_text(json.dumps(dict(served)))
    # Locust rewrites its _stats.csv once a second and not at exit, so its
    # last second is missing there; the totals are read here instead, once the
    # users have stopped. Only the process that owns the statistics writes.
    if SUMMARY and not isinstance(environment.runner, WorkerRunner):
        total = environment.stats.total
        summary = {
            "requests": total.num_requests,
            "failures": total.num_failures,
            "rps": total.total_rps,
            "p50_ms": total.get_response_time_percentile(0.50),
            "p95_ms": total.get_response_time_percentile(0.95),
            "p99_ms": total.get_response_time_percentile(0.99),
            "max_ms": total.max_response_time,
        }
        Path(SUMMARY).write_text(json.dumps(summary))


class ContentApiUser(FastHttpUser):
    """One client of the content API, looping without pause (a closed model:
    throughput is what the server gives, not a fixed arrival rate)."""

    wait_time = constant(0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        number = next(_user_numbers)
        process = getattr(environment.runner, "worker_index", 0)
        # Each user has its own generator, so its sequence of requests is the
        # same in every run whatever the scheduling between users.
        # Limitation: how far each user gets in its sequence, and so the exact
        # mix of the whole run, still depends on timing.
        self.rng = random.Random(f"{SEED}:{process}:{number}")
        self.base = HOSTS[number % len(HOSTS)] if HOSTS else ""
        weights = READS if MIX == "read" else WRITES
        self.operations = list(weights)
        self.weights = list(weights.values())
        self.created: list[int] = []

    @task
    def step(self) -> None:
        operation = self.rng.choices(self.operations, self.weights)[0]
        getattr(self, operation)()

    def list_page(self) -> None:
        pages = max(1, (LAST_ID - FIRST_ID + 1) // PAGE_SIZE)
        page = self.rng.randint(1, pages)
        self.client.get(
            f"{self.base}/api/articles?page={page}&page_size={PAGE_SIZE}",
            name="GET /api/articles",
        )

    def fetch_one(self) -> None:
        article = self.rng.randint(FIRST_ID, LAST_ID)
        self.client.get(
            f"{self.base}/api/articles/{article}", name="GET /api/articles/{id}"
        )

    def filter_title(self) -> None:
        word = self.rng.choice(WORDS)
        self.client.get(
            f"{self.base}/api/articles?title={word}&page_size={PAGE_SIZE}",
            name="GET /api/articles?title=",
        )

    def create_article(self) -> None:
        title = f"{self.rng.choice(WORDS)} load {self.rng.randint(1, 10**6)}"
        response = self.client.post(
            f"{self.base}/api/articles",
            json={"title": title, "body": "written under load"},
            name="POST /api/articles",
        )
        if response.status_code == 201:
            self.created.append(int(response.json()["id"]))

    def update_article(self) -> None:
        pool = self.created or [self.rng.randint(FIRST_ID, LAST_ID)]
        article = self.rng.choice(pool)
        self.client.put(
            f"{self.base}/api/articles/{article}",
            json={"title": f"{self.rng.choice(WORDS)} revised", "body": "updated"},
            name="PUT /api/articles/{id}",
        )
