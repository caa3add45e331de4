"""A load run: every setup of the plan, round after round, each on a fresh
database seeded with the same articles, loaded by Locust for the same time.

A point is one setup in one round: start the server side, seed, subscribe a
webhook sink (write mix), load, stop. Rounds alternate their order (A B C,
then C B A) so a machine that speeds up or slows down during the sweep tilts
every setup alike. Whatever stage fails, every process of the point is
stopped and result.json names the stage.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from harness import database
from harness.claims import evaluate
from harness.load import figures
from harness.load.corpus import titles
from harness.load.environment import describe
from harness.load.generator import (
    LOCUSTFILE,
    Generator,
    LoadError,
    LoadShape,
    Meter,
    check_locustfile,
)
from harness.load.generator import Progress as LoadProgress
from harness.load.setups import Setup
from harness.runner import (
    ADMIN_TOKEN,
    WEBHOOK_SECRET,
    Interrupted,
    Options,
    Progress,
    StageError,
    interrupted_by,
    last_stage,
    stage,
    write_result,
)
from harness.scenario import Load, LoadScenario
from harness.sinks import HttpSink
from harness.topology import Topology
from harness.workload import ALL_EVENTS
from reference.cpus import available_cpus
from reference.db import make_engine
from reference.migrate import upgrade

BOOT_TIMEOUT = 60.0
READY_PATH = "/_health/ready"
# An instance at rest, measured before its load for the roles comparison.
IDLE_SECONDS = 3.0


def plan(load: Load, cpus: int) -> list[list[Setup]]:
    """The setups of each round, in the order they run."""
    top = load.workers_max or cpus
    base = [Setup("cluster-off")] if load.cluster_off else []
    for workers in range(1, top + 1):
        base.append(Setup("cluster", workers))
        base += [Setup(peer, workers) for peer in load.peers]
    return [base if number % 2 == 0 else base[::-1] for number in range(load.rounds)]


def role_plan(load: Load) -> list[Setup]:
    if not load.roles:
        return []
    return [
        Setup("roles", -1),
        Setup("roles", 0),
        Setup("roles", load.content_api_instances),
    ]


@dataclass(frozen=True)
class PointOutcome:
    figures: dict[str, Any]
    idle: dict[str, Any] | None


class LoadRun:
    """Runs one load scenario into its folder and returns the result dict."""

    def __init__(
        self,
        scenario: LoadScenario,
        folder: Path,
        options: Options,
        progress: Progress,
        locustfile: Path = LOCUSTFILE,
    ) -> None:
        self.scenario = scenario
        self.load = scenario.load
        self.folder = folder
        self.options = options
        self.progress = progress
        self.locustfile = locustfile
        self.timings: dict[str, float] = {}
        self.points: list[dict[str, Any]] = []
        self.roles: dict[str, Any] = {}

    def stage(self, name: str) -> AbstractContextManager[None]:
        return stage(
            self.scenario.name, name, self.progress, self.timings, plain=(LoadError,)
        )

    def run(self) -> dict[str, Any]:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            result = self._run()
        except StageError as exc:
            result = self._error_result(exc.stage, exc.message)
        except KeyboardInterrupt as exc:
            by = interrupted_by(exc)
            stage = last_stage(self.timings)
            result = self._error_result(stage, f"interrupted by {by}")
            write_result(self.folder, result)
            raise Interrupted(result, by) from None
        write_result(self.folder, result)
        return result

    def _run(self) -> dict[str, Any]:
        with self.stage("check locust file"):
            check_locustfile(self.locustfile)
        environment = describe(self.options.database)
        rounds = plan(self.load, available_cpus())
        total = sum(len(r) for r in rounds) + len(role_plan(self.load))
        index = 0
        for number, setups in enumerate(rounds, start=1):
            for setup in setups:
                index += 1
                name = f"{setup.label} (round {number}, point {index}/{total})"
                with self.stage(name):
                    self.points.append(self._point(setup, number, index).figures)
        self._roles(index, total)
        return self._result(environment)

    def _roles(self, index: int, total: int) -> None:
        setups = role_plan(self.load)
        if not setups:
            return
        self.roles = {"available": True, "points": [], "idle": {}}
        for setup in setups:
            index += 1
            name = f"{setup.label} (roles, point {index}/{total})"
            try:
                with self.stage(name):
                    outcome = self._point(setup, 1, index)
            except StageError as exc:
                if setup.workers >= 0:
                    raise
                # The first roles point starts a content-api instance alone:
                # a server without the role setting refuses to boot with it.
                self.roles = {"available": False, "reason": exc.message}
                return
            self.roles["points"].append(outcome.figures)
            if outcome.idle is not None:
                self.roles["idle"][setup.label] = outcome.idle

    def _point(self, setup: Setup, number: int, index: int) -> PointOutcome:
        folder = self.folder / "points" / f"{index:02d}-{setup.label}"
        folder.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            url = stack.enter_context(
                database.prepared(self.options.database, folder, f"load_{index}")
            )
            if setup.needs_schema:
                _migrate(url)
            env = {
                "DATABASE_URL": url,
                "CLUSTERPROOF_ADMIN__TOKEN": ADMIN_TOKEN,
                "CLUSTERPROOF_WEBHOOKS__SECRET": WEBHOOK_SECRET,
                "CLUSTERPROOF_UPLOADS__DIR": str(folder / "uploads"),
            }
            sink = None
            if self.load.mix == "write":
                sink = stack.enter_context(
                    HttpSink(folder / "http.jsonl", secret=WEBHOOK_SECRET)
                )
            instances = setup.instances(folder, env)
            topology = Topology(instances)
            stack.callback(topology.stop)
            topology.start()
            topology.wait_ready(READY_PATH, BOOT_TIMEOUT)
            if setup.kind == "roles" and setup.workers < 0:
                _check_content_only(instances[0].url)
            ids = seed(instances[0].url, self.load.articles, self.load.seed)
            if sink is not None and setup.workers >= 0:
                subscribe(instances[0].url, f"http://127.0.0.1:{sink.port}/hooks")
            server_pids = [i.pid for i in instances if i.pid is not None]
            idle = None
            if setup.kind == "roles" and setup.workers <= 0:
                idle = _idle(server_pids)
            serving = setup.serving_pids(instances)
            run = Generator(
                folder, [i.url for i in instances], self._shape(), ids, self.locustfile
            ).run(server_pids, self._load_progress(setup))
        return PointOutcome(figures.point_figures(setup, number, run, serving), idle)

    def _shape(self) -> LoadShape:
        load = self.load
        return LoadShape(
            mix=load.mix,
            users=load.users,
            spawn_rate=load.spawn_rate,
            duration=load.duration,
            seed=load.seed,
            processes=load.load_processes,
        )

    def _load_progress(self, setup: Setup) -> LoadProgress:
        def report(elapsed: float, rps: float | None) -> None:
            rate = "starting" if rps is None else f"{rps:.0f} rps"
            self.progress(
                self.scenario.name,
                f"load: {setup.label}, {elapsed:.0f} s of "
                f"{self.load.duration:g} s, {rate}",
            )

        return report

    def _result(self, environment: dict[str, Any]) -> dict[str, Any]:
        all_points = self.points + self.roles.get("points", [])
        setups = figures.by_setup(all_points)
        peers = figures.peer_rows(setups)
        found = figures.metrics(all_points, setups, peers)
        claims = [
            evaluate(claim.check, found, name=claim.name)
            for claim in self.scenario.claims
        ]
        held = all(claim.held for claim in claims)
        return {
            **self._header(),
            "verdict": "held" if held else "failed",
            "claims": [claim.as_dict() for claim in claims],
            "load": {
                "settings": self.load.model_dump(),
                "environment": environment,
                "points": self.points,
                "setups": setups,
                "peers": peers,
                "roles": self.roles,
                "metrics": figures.json_safe(found),
            },
            "files": self._files(),
            "timings": self.timings,
        }

    def _header(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "description": self.scenario.description,
            "suite": self.scenario.suite,
            "database": "postgresql" if self.options.database else "sqlite",
        }

    def _files(self) -> list[str]:
        return sorted(
            str(path.relative_to(self.folder))
            for path in self.folder.rglob("*")
            if path.is_file() and path.suffix in {".log", ".csv"}
        )

    def _error_result(self, stage: str, message: str) -> dict[str, Any]:
        return {
            **self._header(),
            "verdict": "error",
            "error": {"stage": stage, "message": message},
            "claims": [],
            "load": {"points": self.points, "roles": self.roles},
            "files": self._files(),
            "timings": self.timings,
        }


def _migrate(url: str) -> None:
    # For servers that serve only (the peers, a content-api instance alone):
    # the schema is brought to head here, once, as our primary would.
    engine = make_engine(url)
    try:
        upgrade(engine, "load-harness")
    finally:
        engine.dispose()


def seed(base_url: str, count: int, seed_value: int) -> tuple[int, int]:
    """Create the fixed articles; returns the first and last id."""
    ids = []
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        for title in titles(count, seed_value):
            response = client.post("/api/articles", json={"title": title, "body": ""})
            if response.status_code != 201:
                raise LoadError(
                    f"seeding {base_url}: POST /api/articles answered "
                    f"{response.status_code}: {response.text[:200]}"
                )
            ids.append(int(response.json()["id"]))
    return min(ids), max(ids)


def subscribe(base_url: str, hook_url: str) -> None:
    response = httpx.post(
        f"{base_url}/admin/webhooks",
        json={"url": hook_url, "events": ALL_EVENTS},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10.0,
    )
    if response.status_code not in (200, 201):
        raise LoadError(
            f"subscribing the webhook sink at {base_url}: "
            f"{response.status_code}: {response.text[:200]}"
        )


def _check_content_only(base_url: str) -> None:
    # Measured from outside: an instance that still answers the admin API
    # did not take the role, whatever its settings say.
    status = httpx.get(
        f"{base_url}/admin/webhooks",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10.0,
    ).status_code
    if status != 404:
        raise LoadError(
            f"an instance started with the content-api role answers "
            f"/admin/webhooks with {status}, not 404: the role is not honoured"
        )


def _idle(pids: list[int]) -> dict[str, Any]:
    meter = Meter(pids)
    meter.start()
    time.sleep(IDLE_SECONDS)
    meter.sample()
    return {
        "seconds": IDLE_SECONDS,
        "cpu_seconds": round(meter.cpu_seconds, 3),
        "rss_mb": round(meter.peak_rss_mb, 1),
    }
