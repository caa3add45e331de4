"""Scenario files: one TOML file per scenario, validated before anything runs.

Adding a scenario needs no Python: the file names the topology, the database,
the clock pin, the cron tasks the run expects to fire, the workload and the
claims. A file with a [load] table is a load scenario instead: Locust's shape,
the worker counts to sweep, the peers, and thresholds as claims.
"""

from __future__ import annotations

import tomllib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from harness import metrics
from harness.claims import ClaimError, parse_claim
from harness.clock import ClockError, format_instant, parse_instant
from reference.cron import crontab_trigger
from reference.cron_tasks import TASKS

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
# Below this, Locust's start and stop are a large part of the run and the
# figures are noise.
MIN_LOAD_SECONDS = 3.0
# A run waits in real time from the pin to clock.until.
MAX_PINNED_SPAN = timedelta(minutes=15)


class ScenarioError(Exception):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Strict):
    """What is started: the reference server, or any command that takes a port
    and environment variables."""

    kind: Literal["reference", "command"] = "reference"
    command: list[str] = []
    clock: Literal["in-process", "libfaketime"] = "in-process"
    ready_path: str = "/_health/ready"
    boot_timeout: float = Field(default=30.0, gt=0)


class InstanceSpec(_Strict):
    env: dict[str, str] = {}
    cluster_workers: int | None = Field(default=None, ge=1, le=256)


class Topology(_Strict):
    instances: int = Field(default=1, ge=1, le=16)
    # 0 picks free ports; otherwise instance i listens on base_port + i.
    base_port: int = Field(default=0, ge=0, le=65_000)
    start: Literal["together", "staggered"] = "together"
    allow_boot_failure: bool = False
    env: dict[str, str] = {}
    instance: list[InstanceSpec] = []


class Sinks(_Strict):
    # 0 picks a free port.
    smtp_port: int = Field(default=0, ge=0, le=65_535)
    http_port: int = Field(default=0, ge=0, le=65_535)


class Database(_Strict):
    kind: Literal["sqlite", "postgresql"] = "sqlite"


def _instant(value: object) -> datetime:
    # TOML's unquoted 2026-01-01T08:59:50 arrives as a datetime with no zone;
    # it is refused like its quoted form, before it meets an aware one.
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    try:
        return parse_instant(text)
    except ClockError as exc:
        raise ValueError(str(exc)) from None


# An instant with a time zone, quoted or not: "2026-01-01T08:59:50Z".
Instant = Annotated[datetime, BeforeValidator(_instant)]


class Clock(_Strict):
    pin: Instant
    until: Instant


class CronTask(_Strict):
    name: str
    rule: str
    tz: str = "UTC"
    effect: Literal["email", "publish"]

    @model_validator(mode="after")
    def _valid_rule(self) -> CronTask:
        # Here, not when the checker first needs the fire times: a typo in a
        # rule must not cost a whole run before it is reported.
        try:
            self.trigger()
        except ValueError as exc:
            raise ValueError(f"task {self.name!r}: {exc}") from None
        return self

    def trigger(self) -> CronTrigger:
        return crontab_trigger(self.rule, self.tz)


class ScheduledArticle(_Strict):
    title: str
    publish_at: Instant


class Workload(_Strict):
    articles: list[ScheduledArticle] = []
    # The write corpus: articles created, updated and some deleted over HTTP.
    writes: int = Field(default=0, ge=0, le=10_000)
    concurrency: int = Field(default=4, ge=1, le=64)


class Fault(_Strict):
    kind: Literal["kill-worker", "terminate"]
    instance: str = "a"
    count: int = Field(default=1, ge=1, le=20)
    # terminate: slow uploads in flight when SIGTERM arrives, and how long the
    # instance may take to drain and exit.
    in_flight: int = Field(default=4, ge=0, le=64)
    deadline: float = Field(default=15.0, gt=0)


class Variant(_Strict):
    """One configuration of the same topology, for scenarios that compare
    configurations (equivalence): applied to every instance."""

    name: str
    cluster_workers: int | None = Field(default=None, ge=1, le=256)
    env: dict[str, str] = {}


class Claim(_Strict):
    name: str
    check: str


class Scenario(_Strict):
    name: str
    description: str
    suite: Literal["reproduce", "verify-cluster"]
    target: Target = Target()
    topology: Topology = Topology()
    database: Database = Database()
    sinks: Sinks = Sinks()
    clock: Clock
    tasks: list[CronTask] = []
    workload: Workload = Workload()
    faults: list[Fault] = []
    variants: list[Variant] = []
    claims: list[Claim] = Field(min_length=1)


class Load(_Strict):
    """Load on the content API: one point per setup and round."""

    mix: Literal["read", "write"] = "read"
    users: int = Field(default=16, ge=1, le=10_000)
    spawn_rate: float = Field(default=100.0, gt=0)
    duration: float = Field(default=10.0, ge=MIN_LOAD_SECONDS, le=3600)
    seed: int = 1
    articles: int = Field(default=200, ge=10, le=100_000)
    # Cluster mode is swept from 1 to workers_max workers; 0 means the CPUs
    # available to the harness.
    workers_max: int = Field(default=0, ge=0, le=256)
    cluster_off: bool = True
    peers: list[Literal["gunicorn", "uvicorn"]] = []
    # Each round runs every setup once, in the reverse order of the round
    # before, so a drift of the machine's speed falls on all setups alike.
    rounds: int = Field(default=1, ge=1, le=20)
    load_processes: int = Field(default=1, ge=1, le=64)
    roles: bool = False
    content_api_instances: int = Field(default=1, ge=1, le=16)


class LoadScenario(_Strict):
    name: str
    description: str
    suite: Literal["verify-cluster", "load"]
    database: Database = Database()
    load: Load
    claims: list[Claim] = Field(min_length=1)


def load(path: Path) -> Scenario | LoadScenario:
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"scenario file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None

    kind: type[Scenario] | type[LoadScenario] = (
        LoadScenario if "load" in raw else Scenario
    )
    try:
        scenario = kind.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(f"{path}: {_first_error(exc)}") from None
    if scenario.name != path.stem:
        raise ScenarioError(
            f"{path}: name {scenario.name!r} must match the file name; rename "
            f"the file to {scenario.name}.toml or set name = {path.stem!r}"
        )

    problem = _run_problem(scenario) if isinstance(scenario, Scenario) else None
    if problem:
        raise ScenarioError(f"{path}: {problem}")
    for claim in scenario.claims:
        try:
            parsed = parse_claim(claim.check.format(instances=1))
        except (ClaimError, KeyError, IndexError) as exc:
            raise ScenarioError(f"{path}: claim {claim.name!r}: {exc}") from None
        for metric in parsed.metrics():
            problem = _claim_problem(scenario, metric)
            if problem:
                raise ScenarioError(f"{path}: claim {claim.name!r}: {problem}")
    return scenario


def expected_occurrences(scenario: Scenario) -> list[tuple[str, str]]:
    """Every fire time of every declared task in (pin, until]."""
    occurrences = []
    for task in scenario.tasks:
        trigger = task.trigger()
        fire = trigger.get_next_fire_time(
            None, scenario.clock.pin + timedelta(microseconds=1)
        )
        while fire is not None and fire <= scenario.clock.until:
            occurrences.append((task.name, format_instant(fire)))
            fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
    return occurrences


def _run_problem(scenario: Scenario) -> str | None:
    """What makes a scenario unable to run as written, or None."""
    clock = scenario.clock
    if clock.until <= clock.pin:
        return "clock.until must be after clock.pin"
    if clock.until - clock.pin > MAX_PINNED_SPAN:
        return (
            f"clock.until must be at most {MAX_PINNED_SPAN.seconds // 60} minutes "
            "after clock.pin, because the run waits that long in real time; pin "
            "a few seconds before the fire times instead"
        )
    if scenario.target.kind == "reference":
        for index, task in enumerate(scenario.tasks):
            problem = _reference_task_problem(task)
            if problem:
                return f"tasks[{index}]: {problem}"
    names = [chr(ord("a") + index) for index in range(scenario.topology.instances)]
    for index, fault in enumerate(scenario.faults):
        if fault.instance not in names:
            return (
                f"faults[{index}].instance: {fault.instance!r} is not one of the "
                f"instances {', '.join(names)}"
            )
    return None


def _reference_task_problem(task: CronTask) -> str | None:
    # The reference server's tasks are code, not configuration: a scenario
    # can only declare what it will run.
    served = TASKS.get(task.name)
    if served is None:
        return (
            f"the reference server has no task {task.name!r}; it runs "
            f"{', '.join(TASKS)} (reference/cron_tasks.py)"
        )
    if (served.rule, served.tz) != (task.rule, task.tz):
        return (
            f"the reference server runs {task.name} on {served.rule!r} in "
            f"{served.tz}, not {task.rule!r} in {task.tz}; declare its own rule"
        )
    return None


def _claim_problem(scenario: Scenario | LoadScenario, metric: str) -> str | None:
    if isinstance(scenario, LoadScenario):
        return metrics.unknown(metric, load=True)
    problem = metrics.unknown(
        metric, load=False, tasks=[t.name for t in scenario.tasks]
    )
    if problem:
        return problem
    firing = {task for task, _ in expected_occurrences(scenario)}
    for task in scenario.tasks:
        if metric.endswith(f"[{task.name}]") and task.name not in firing:
            return (
                f"{metric}: task {task.name} has no fire time between clock.pin "
                "and clock.until; pin a few seconds before one"
            )
    traffic = scenario.workload.writes or scenario.faults
    if metric in metrics.TRAFFIC and not traffic:
        return (
            f"{metric} is measured under traffic only; set workload.writes "
            "or add a fault"
        )
    return None


def _first_error(exc: ValidationError) -> str:
    """tasks[0].effect: input should be 'email' or 'publish' (got 'fax')"""
    first = exc.errors()[0]
    where = "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]
    ).lstrip(".")
    if first["type"] == "value_error":
        # Our own validators' messages already show the bad value.
        message = str(first["ctx"]["error"])
    else:
        message = f"{first['msg'][0].lower()}{first['msg'][1:]}"
        message += f" (got {first.get('input')!r})"
    return f"{where or '(top level)'}: {message}"


def find(name: str, directory: Path = SCENARIO_DIR) -> Path:
    path = directory / f"{name}.toml"
    if path.exists():
        return path
    known = ", ".join(sorted(p.stem for p in directory.glob("*.toml")))
    if not known:
        raise ScenarioError(
            f"unknown scenario {name!r}: {directory} has no .toml files"
        )
    raise ScenarioError(f"unknown scenario {name!r}; known scenarios: {known}")


def suite(name: str, directory: Path = SCENARIO_DIR) -> list[Scenario | LoadScenario]:
    scenarios = [load(path) for path in sorted(directory.glob("*.toml"))]
    return [scenario for scenario in scenarios if scenario.suite == name]
