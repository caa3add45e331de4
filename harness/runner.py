"""One scenario run, stage by stage: database, sinks, instances, workload,
cron, stop, ledgers, checker, claims, result.json.

Whatever stage fails, the topology is torn down and the scenario folder gets
a result.json whose verdict is "error" and which names the stage; no claim is
reported as held for a run that did not happen.
"""

from __future__ import annotations

import base64
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from harness import database
from harness.checker import Expected, Ledgers, check, summary
from harness.claims import evaluate
from harness.clock import ClockError, PinnedClock, format_instant, parse_instant
from harness.database import DatabaseError
from harness.faults import (
    FaultError,
    Replacements,
    Shutdown,
    kill_worker,
    worker_pids,
)
from harness.scenario import Scenario, Variant, expected_occurrences
from harness.sinks import HttpSink, SmtpSink, read_ledger
from harness.sinks.listen import SinkError
from harness.topology import (
    Instance,
    Topology,
    TopologyError,
    free_port,
    last_lines,
    reference_command,
)
from harness.workload import Workload, WorkloadError

ADMIN_TOKEN = "clusterproof-harness"
# Between the last instance's boot and the first fire time: the workload
# subscribes the sink and creates the scheduled articles.
WORKLOAD_LEAD_SECONDS = 1.0
# Standard Webhooks secret shared by the instances and the HTTP sink.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"clusterproof-harness-secret").decode()
# After clock.until, the run goes on until the sinks have been quiet this
# long (deliveries queued under load, retries), for at most SETTLE_LIMIT.
QUIET_SECONDS = 1.5
SETTLE_LIMIT_SECONDS = 30.0
GATE_TIMEOUT_SECONDS = 60.0

Progress = Callable[[str, str], None]


# Errors of our own whose message stands alone: shown without their type.
OWN_ERRORS = (
    ClockError,
    DatabaseError,
    FaultError,
    SinkError,
    TopologyError,
    WorkloadError,
)


class StageError(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message


@contextmanager
def stage(
    label: str,
    name: str,
    progress: Progress,
    timings: dict[str, float],
    plain: tuple[type[Exception], ...] = (),
) -> Iterator[None]:
    """One stage of a run: announced, timed, and any failure turned into a
    StageError naming it. Errors of the ``plain`` types carry a message that
    stands alone; others are prefixed with their type."""
    progress(label, name)
    started = time.monotonic()
    try:
        yield
    except StageError:
        raise
    except plain as exc:
        raise StageError(name, str(exc)) from exc
    except Exception as exc:  # every failure is reported with its stage
        raise StageError(name, f"{type(exc).__name__}: {exc}") from exc
    finally:
        timings[name] = round(time.monotonic() - started, 3)


@dataclass(frozen=True)
class Options:
    reports: Path
    database: str | None = None
    instances: int | None = None


def expected_publishes(
    scenario: Scenario, created: list[tuple[dict[str, Any], datetime | None]]
) -> list[tuple[str, str, int, int]]:
    """One entry.publish per scheduled article that an expected occurrence of
    a publishing task comes due for: the first fire at or after its
    publish_at publishes it, in that fire's window or overdue, as the
    reference's publish-scheduled task does."""
    publishing = {task.name for task in scenario.tasks if task.effect == "publish"}
    fires = [
        parse_instant(fire)
        for name, fire in expected_occurrences(scenario)
        if name in publishing
    ]
    return [
        ("entry.publish", "article", article["id"], 1)
        for article, publish_at in created
        if publish_at is not None and any(publish_at <= fire for fire in fires)
    ]


class ScenarioRun:
    """Runs one scenario into its folder and returns the result dict."""

    def __init__(
        self,
        scenario: Scenario,
        folder: Path,
        options: Options,
        progress: Progress,
        variant: Variant | None = None,
    ) -> None:
        self.scenario = scenario
        self.variant = variant
        self.folder = folder
        self.options = options
        self.progress = progress
        self.count = options.instances or scenario.topology.instances
        # Re-anchored when the instances start, so boot gets the full lead.
        self.clock = PinnedClock(scenario.clock.pin)
        self.topology: Topology | None = None
        self.created: list[tuple[dict[str, Any], datetime | None]] = []
        self.workload: Workload | None = None
        self.replacements = Replacements()
        self.extra_metrics: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.database_url = ""

    def stage(self, name: str) -> AbstractContextManager[None]:
        label = self.scenario.name
        if self.variant is not None:
            label += f" ({self.variant.name})"
        return stage(label, name, self.progress, self.timings, plain=OWN_ERRORS)

    def run(self) -> dict[str, Any]:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "instances").mkdir(exist_ok=True)
        try:
            result = self._run()
        except StageError as exc:
            result = self._error_result(exc.stage, exc.message)
        except KeyboardInterrupt as exc:
            by = interrupted_by(exc)
            result = self._error_result(
                last_stage(self.timings), f"interrupted by {by}"
            )
            self._write(result)
            raise Interrupted(result, by) from None
        self._write(result)
        return result

    def _run(self) -> dict[str, Any]:
        with ExitStack() as stack:
            with self.stage("prepare database"):
                self.database_url = stack.enter_context(
                    database.prepared(
                        self.options.database, self.folder, self.scenario.name
                    )
                )
            with self.stage("start sinks"):
                ports = self.scenario.sinks
                smtp = stack.enter_context(
                    SmtpSink(self.folder / "smtp.jsonl", port=ports.smtp_port)
                )
                http = stack.enter_context(
                    HttpSink(
                        self.folder / "http.jsonl",
                        port=ports.http_port,
                        secret=WEBHOOK_SECRET,
                    )
                )
            stack.callback(self._teardown)
            with self.stage("start instances"):
                self._start_instances(smtp.port)
            with self.stage("workload"):
                self._workload(http.port)
            if self.scenario.workload.writes or self.scenario.faults:
                with self.stage("traffic and faults"):
                    self._traffic_and_faults()
            with self.stage("cron"):
                self._wait_for_cron()
            with self.stage("settle"):
                self._settle()
            with self.stage("stop instances"):
                self._teardown()
            with self.stage("collect ledgers"):
                ledgers = self._ledgers()
            with self.stage("check"):
                return self._result(ledgers)
        raise AssertionError("unreachable")

    def _instance_env(self, index: int, smtp_port: int, gate: Path) -> dict[str, str]:
        spec = self.scenario.topology
        env = {
            "DATABASE_URL": self.database_url,
            "CLUSTERPROOF_ADMIN__TOKEN": ADMIN_TOKEN,
            "CLUSTERPROOF_MAIL__SMTP_PORT": str(smtp_port),
            "CLUSTERPROOF_MAIL__DIGEST_TO": "editors@clusterproof.test",
            "CLUSTERPROOF_WEBHOOKS__SECRET": WEBHOOK_SECRET,
            "CLUSTERPROOF_UPLOADS__DIR": str(self.folder / "uploads"),
            **self.clock.env(self.scenario.target.clock),
            **spec.env,
        }
        if spec.start == "together":
            env["CLUSTERPROOF_START_GATE"] = str(gate)
        own = spec.instance[index] if index < len(spec.instance) else self.variant
        if own is not None:
            env.update(own.env)
            if own.cluster_workers is not None:
                env["CLUSTERPROOF_SERVER__CLUSTER__ENABLED"] = "true"
                env["CLUSTERPROOF_SERVER__CLUSTER__WORKERS"] = str(own.cluster_workers)
        return env

    def _start_instances(self, smtp_port: int) -> None:
        target = self.scenario.target
        self.clock = PinnedClock(self.scenario.clock.pin)
        gate = self.folder / "start-gate"
        gate.unlink(missing_ok=True)
        instances = []
        for index in range(self.count):
            name = chr(ord("a") + index)
            base = self.scenario.topology.base_port
            port = base + index if base else free_port()
            command = (
                reference_command() + ["--port", str(port), "--instance-id", name]
                if target.kind == "reference"
                else [part.format(port=port, instance=name) for part in target.command]
            )
            instances.append(
                Instance(
                    id=name,
                    command=command,
                    port=port,
                    env=self._instance_env(index, smtp_port, gate),
                    workdir=self.folder / "instances" / name,
                    log_path=self.folder / "instances" / f"{name}.log",
                )
            )
        self.topology = Topology(instances)
        if self.scenario.topology.start == "together":
            self.topology.start()
            self._open_gate(gate)
        else:
            self.topology.start(one_by_one=(target.ready_path, target.boot_timeout))
        failed = self.topology.wait_ready(
            target.ready_path,
            target.boot_timeout,
            allow_failures=self.scenario.topology.allow_boot_failure,
        )
        for instance in failed:
            self.progress(
                self.scenario.name,
                f"instance {instance.id} failed during boot: {instance.error}",
            )
        self._check_lead()

    def _check_lead(self) -> None:
        """Stop a run whose instances came up too late for its first fire
        time: its occurrences would read as lost, a failed claim, when the
        scenario's pin is at fault."""
        assert self.topology is not None
        fires = sorted((at, task) for task, at in expected_occurrences(self.scenario))
        # Monotonic instant each instance answered ready.
        booted = {
            i.id: i.started_at + i.ready_seconds
            for i in self.topology
            if i.ready_seconds is not None
        }
        if not fires or not booted:
            return
        at, task = fires[0]
        first = parse_instant(at)
        last = max(booted, key=lambda name: booted[name])
        ago = time.monotonic() - booted[last]
        ready_at = self.clock.now() - timedelta(seconds=ago)
        late = (ready_at - first).total_seconds() + WORKLOAD_LEAD_SECONDS
        if late > 0:
            raise StageError(
                "start instances",
                f"instance {last} was ready at pinned "
                f"{format_instant(ready_at)[11:22]}, too late for {task} at "
                f"{at[11:19]} (the workload needs {WORKLOAD_LEAD_SECONDS:g} s "
                f"before it); set clock.pin at least {math.ceil(late)} s "
                "earlier, or start fewer instances",
            )

    def _open_gate(self, gate: Path) -> None:
        """Release every instance at once, after all have reached the gate."""
        assert self.topology is not None
        deadline = time.monotonic() + GATE_TIMEOUT_SECONDS
        for instance in self.topology:
            marker = Path(f"{gate}.{instance.id}")
            while not marker.exists():
                if instance.exit_code is not None:
                    raise StageError(
                        "start instances",
                        f"instance {instance.id} exited with code "
                        f"{instance.exit_code} before the start gate; "
                        f"see {instance.log_path}",
                    )
                if time.monotonic() > deadline:
                    raise StageError(
                        "start instances",
                        f"instance {instance.id} did not reach the start gate in "
                        f"{GATE_TIMEOUT_SECONDS:.0f} s; see {instance.log_path}",
                    )
                time.sleep(0.01)
        gate.touch()

    def _workload(self, http_port: int) -> None:
        assert self.topology is not None
        urls = [i.url for i in self.topology if i.exit_code is None]
        self.workload = Workload(urls, ADMIN_TOKEN, self.folder / "workload.jsonl")
        self.workload.subscribe(f"http://127.0.0.1:{http_port}/hooks")
        for article in self.scenario.workload.articles:
            body = self.workload.create_article(article.title, article.publish_at)
            self.created.append((body, article.publish_at))

    def _traffic_and_faults(self) -> None:
        """The write corpus runs in the background while faults are applied."""
        assert self.topology is not None and self.workload is not None
        spec = self.scenario.workload
        background = ThreadPoolExecutor(max_workers=1)
        traffic = background.submit(self.workload.writes, spec.writes, spec.concurrency)
        try:
            for fault in self.scenario.faults:
                instance = self._instance(fault.instance)
                if fault.kind == "kill-worker":
                    for _ in range(fault.count):
                        time.sleep(0.3)
                        self.replacements.seconds.append(kill_worker(instance))
                else:
                    shutdown = Shutdown(in_flight=fault.in_flight)
                    shutdown.run(instance, fault.deadline)
                    self.extra_metrics.update(shutdown.metrics())
        finally:
            background.shutdown(wait=True)
        traffic.result()  # a failure of the traffic itself fails the stage
        serving = self.workload.serving_pids()
        workers = [pid for i in self.topology for pid in worker_pids(i)]
        self.extra_metrics.update(
            requests=len(self.workload.records),
            failed_requests=len(self.workload.failed_requests()),
            serving_processes=len(serving),
            idle_workers=sum(1 for pid in workers if pid not in serving),
        )
        if any(fault.kind == "kill-worker" for fault in self.scenario.faults):
            self.extra_metrics.update(self.replacements.metrics())

    def _instance(self, name: str) -> Instance:
        assert self.topology is not None
        for instance in self.topology:
            if instance.id == name:
                return instance
        raise StageError(
            "traffic and faults",
            f"fault names instance {name!r}, which is not started",
        )

    def _settle(self) -> None:
        """Wait until neither sink has received anything for QUIET_SECONDS."""
        ledgers = [self.folder / "smtp.jsonl", self.folder / "http.jsonl"]

        def received() -> int:
            return sum(path.stat().st_size for path in ledgers if path.exists())

        deadline = time.monotonic() + SETTLE_LIMIT_SECONDS
        last, quiet_since = received(), time.monotonic()
        while time.monotonic() - quiet_since < QUIET_SECONDS:
            if time.monotonic() > deadline:
                return  # still busy: the checker will report what is missing
            time.sleep(0.1)
            now = received()
            if now != last:
                last, quiet_since = now, time.monotonic()

    def _wait_for_cron(self) -> None:
        remaining = self.clock.seconds_until(self.scenario.clock.until)
        deadline = time.monotonic() + max(0.0, remaining)
        while time.monotonic() < deadline:
            self.progress(
                self.scenario.name,
                f"cron: pinned clock {format_instant(self.clock.now())[11:19]}, "
                f"until {format_instant(self.scenario.clock.until)[11:19]}",
            )
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    def _teardown(self) -> None:
        if self.topology is None:
            return
        for instance in self.topology:
            code = instance.exit_code
            if code is not None and instance.error is None:
                instance.error = (
                    f"exited with code {code} before the run ended: "
                    f"{last_lines(instance.log_path)}"
                )
        self.topology.stop()

    def _ledgers(self) -> Ledgers:
        server = database.read_ledgers(self.database_url)
        assert self.topology is not None
        return Ledgers(
            emails=read_ledger(self.folder / "smtp.jsonl"),
            webhooks=read_ledger(self.folder / "http.jsonl"),
            cron_executions=server["cron_executions"],
            migration_runs=server["migration_runs"],
            deliveries=server["deliveries"],
            instances=[self._instance_row(instance) for instance in self.topology],
        )

    def _instance_row(self, instance: Instance) -> dict[str, Any]:
        return {
            "id": instance.id,
            "pid": instance.pid,
            "port": instance.port,
            "exit_code": instance.exit_code,
            "error": instance.error,
            "ready_seconds": instance.ready_seconds,
            "cpu_seconds": round(instance.usage.cpu_seconds, 3),
            "peak_cpu_percent": round(instance.usage.peak_cpu_percent, 1),
            "peak_rss_mb": round(instance.usage.peak_rss_mb, 1),
            "peak_processes": instance.usage.peak_processes,
            "log": str(instance.log_path.relative_to(self.folder)),
        }

    def _expected(self) -> Expected:
        events = list(self.workload.expected_events()) if self.workload else []
        events += expected_publishes(self.scenario, self.created)
        return Expected(
            occurrences=expected_occurrences(self.scenario),
            events=events,
            mail_tasks={t.name for t in self.scenario.tasks if t.effect == "email"},
            clock_offset_seconds=self.clock.offset,
        )

    def _result(self, ledgers: Ledgers) -> dict[str, Any]:
        outcome = check(ledgers, self._expected())
        self.metrics = {**outcome.metrics, **self.extra_metrics}
        result = {
            **self._header(),
            **summary(outcome),
            "instances": ledgers.instances,
            "measures": self.extra_metrics,
            "details": outcome.details(),
            "timings": self.timings,
        }
        if self.variant is not None:
            # A variant is one half of a comparison: the claims are judged
            # over all variants together (harness.equivalence).
            return result | {"verdict": "measured", "claims": []}
        return self.judge(result, self.metrics)

    def judge(self, result: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
        """Evaluate the scenario's claims over ``metrics`` into ``result``."""
        claims = [
            evaluate(claim.check.format(instances=self.count), metrics, name=claim.name)
            for claim in self.scenario.claims
        ]
        held = all(claim.held for claim in claims)
        return result | {
            "verdict": self._verdict(held),
            "claims": [claim.as_dict() for claim in claims],
        }

    def _verdict(self, held: bool) -> str:
        if self.scenario.suite == "reproduce":
            return "reproduced" if held else "not reproduced"
        return "held" if held else "failed"

    def _header(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "description": self.scenario.description,
            "suite": self.scenario.suite,
            "database": "postgresql" if self.options.database else "sqlite",
            "instance_count": self.count,
            "clock_pin": format_instant(self.scenario.clock.pin),
            "files": sorted(
                str(path.relative_to(self.folder))
                for path in self.folder.rglob("*")
                if path.is_file() and path.suffix in {".log", ".jsonl"}
            ),
        }

    def _error_result(self, stage: str, message: str) -> dict[str, Any]:
        instances = (
            [self._instance_row(instance) for instance in self.topology]
            if self.topology
            else []
        )
        return {
            **self._header(),
            "verdict": "error",
            "error": {"stage": stage, "message": message},
            "instances": instances,
            "claims": [],
            "timings": self.timings,
        }

    def _write(self, result: dict[str, Any]) -> None:
        write_result(self.folder, result)


def write_result(folder: Path, result: dict[str, Any]) -> None:
    """result.json, written whole or not at all."""
    path = folder / "result.json"
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(result, indent=2, default=str) + "\n")
    os.replace(partial, path)


class ReportsError(Exception):
    """The reports folder cannot hold a new run."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal, with the result that says where it stopped."""

    def __init__(self, result: dict[str, Any], by: str) -> None:
        super().__init__(by)
        self.result = result


def interrupted_by(exc: KeyboardInterrupt) -> str:
    """'SIGTERM' for a signal the CLI turned into an interrupt, else 'Ctrl-C'."""
    return str(exc) or "Ctrl-C"


def last_stage(timings: dict[str, float]) -> str:
    """The stage a run was in: stages record their time as they end, even
    when interrupted."""
    return next(reversed(timings), "setup")


def new_run_folder(reports: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # Absolute, because instances run in folders of their own and are handed
    # paths inside this one (the start gate, the uploads).
    folder = reports.resolve() / f"{stamp}-{secrets.token_hex(2)}"
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise ReportsError(
            f"cannot create a run folder in {reports} ({exc.strerror}); "
            "choose a writable folder with --reports"
        ) from None
    return folder


def point_latest(reports: Path, folder: Path) -> None:
    latest = reports / "latest"
    temporary = reports / f".latest-{secrets.token_hex(4)}"
    temporary.symlink_to(folder.name)
    os.replace(temporary, latest)
