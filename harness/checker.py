"""Reads the ledgers of a run and says, per occurrence and per event, what
happened: attempted, executed, duplicated, lost. Pure functions, no I/O."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

Row = dict[str, Any]
EventKey = tuple[Any, Any, Any, Any]


@dataclass
class Ledgers:
    """Everything recorded during a run.

    emails and webhooks come from the sinks; cron_executions, migration_runs
    and deliveries from the server; instances from the topology, one dict
    {id, pid, exit_code, error, ...} per instance.
    """

    emails: list[Row] = field(default_factory=list)
    webhooks: list[Row] = field(default_factory=list)
    cron_executions: list[Row] = field(default_factory=list)
    migration_runs: list[Row] = field(default_factory=list)
    deliveries: list[Row] = field(default_factory=list)
    instances: list[Row] = field(default_factory=list)


@dataclass
class Expected:
    """What a correct run produces.

    occurrences: (task, ISO instant); events: (event, model, entry id, entry
    version); mail_tasks: tasks whose effect is an email, so their effect is
    counted at the SMTP sink rather than in the cron ledger.
    clock_offset_seconds: pinned clock minus real clock, added to the sinks'
    real received_at so fire latency is measured on the pinned timeline.
    """

    occurrences: list[tuple[str, str]] = field(default_factory=list)
    events: list[EventKey] = field(default_factory=list)
    mail_tasks: set[str] = field(default_factory=set)
    clock_offset_seconds: float = 0.0


@dataclass
class OccurrenceRow:
    task: str
    occurrence: str
    expected: bool
    attempted: int
    executed: int
    executions: list[Row]
    emails: int
    mailed_by: list[Row]
    duplicated: int
    lost: bool


@dataclass
class EventRow:
    event: Any
    model: Any
    entry_id: Any
    entry_version: Any
    expected: bool
    deliveries: int
    attempts: int
    webhook_ids: list[Any]
    senders: list[Row]
    invalid_signatures: int
    duplicated: int
    lost: bool

    @property
    def key(self) -> EventKey:
        return (self.event, self.model, self.entry_id, self.entry_version)


@dataclass
class MigrationRow:
    revision: Any
    runs: int
    by: list[Row]


@dataclass
class Check:
    occurrences: list[OccurrenceRow]
    events: list[EventRow]
    migrations: list[MigrationRow]
    failed_instances: list[Row]
    fire_latency_p95_ms: dict[str, float]
    metrics: dict[str, float | list[float]]

    def details(self) -> dict[str, list[Row]]:
        """The per-occurrence, per-event and migration rows, ready for JSON."""
        return {
            "occurrences": [asdict(row) for row in self.occurrences],
            "events": [asdict(row) for row in self.events],
            "migrations": [asdict(row) for row in self.migrations],
            "failed_instances": self.failed_instances,
        }


def check(ledgers: Ledgers, expected: Expected) -> Check:
    occurrences = occurrence_rows(ledgers, expected)
    events = event_rows(ledgers.webhooks, expected.events)
    migrations = migration_rows(ledgers.migration_runs)
    failed = failed_instances(ledgers.instances)
    latency = fire_latency_p95_ms(
        ledgers.emails, expected.mail_tasks, expected.clock_offset_seconds
    )
    return Check(
        occurrences=occurrences,
        events=events,
        migrations=migrations,
        failed_instances=failed,
        fire_latency_p95_ms=latency,
        metrics=_metrics(ledgers, occurrences, events, migrations, failed, latency),
    )


def summary(result: Check) -> dict[str, Any]:
    """The result.json fields that come from the checker."""
    metrics = result.metrics
    return {
        "occurrences": metrics["occurrences"],
        "executions": metrics["executions"],
        "duplicates": metrics["duplicates"],
        "lost": metrics["lost"],
        "emails": metrics["emails"],
        "webhooks": metrics["webhooks"],
        "migration_runs": metrics["migration_runs"],
        "fire_latency_p95_ms": result.fire_latency_p95_ms,
    }


def occurrence_rows(ledgers: Ledgers, expected: Expected) -> list[OccurrenceRow]:
    """One row per occurrence expected or seen in the cron ledger or an email.

    The effect of a mail task is the email that arrived; the effect of any
    other task is a run that ended ok. Duplicated and lost are judged on it.
    """
    wanted = {(task, instant_key(at)) for task, at in expected.occurrences}
    runs: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for run in ledgers.cron_executions:
        runs[(str(run.get("task")), instant_key(run.get("occurrence")))].append(run)
    mails: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for mail in ledgers.emails:
        if mail.get("task") is not None:
            mails[(mail["task"], instant_key(mail.get("occurrence")))].append(mail)

    rows = []
    for task, at in sorted(wanted | runs.keys() | mails.keys(), key=_by_time):
        executions = [
            {
                "instance": run.get("instance"),
                "pid": run.get("pid"),
                "started_at": run.get("started_at"),
                "finished_at": run.get("finished_at"),
                "outcome": run.get("outcome"),
                "error": run.get("error"),
            }
            for run in runs.get((task, at), [])
        ]
        mailed_by = [
            {k: mail.get(k) for k in ("instance", "pid", "received_at")}
            for mail in mails.get((task, at), [])
        ]
        executed = sum(1 for run in executions if run["outcome"] == "ok")
        effect = len(mailed_by) if task in expected.mail_tasks else executed
        is_expected = (task, at) in wanted
        rows.append(
            OccurrenceRow(
                task=task,
                occurrence=at,
                expected=is_expected,
                attempted=len(executions),
                executed=executed,
                executions=executions,
                emails=len(mailed_by),
                mailed_by=mailed_by,
                duplicated=max(0, effect - 1),
                lost=is_expected and effect == 0,
            )
        )
    return rows


def event_rows(webhooks: list[Row], expected: list[EventKey]) -> list[EventRow]:
    """One row per event expected or seen at the HTTP sink.

    A delivery is one webhook-id: retries of a delivery share it, so they add
    attempts, not deliveries. Two webhook-ids for one event are a duplicate.
    """
    wanted = [event_key(key) for key in expected]
    attempts: dict[EventKey, list[Row]] = defaultdict(list)
    for row in webhooks:
        key = event_key(
            (
                row.get("event"),
                row.get("model"),
                row.get("entry_id"),
                row.get("entry_version"),
            )
        )
        attempts[key].append(row)

    rows = []
    for key in sorted(set(wanted) | attempts.keys(), key=_by_repr):
        seen = attempts.get(key, [])
        webhook_ids = list(dict.fromkeys(row.get("webhook_id") for row in seen))
        senders = list(
            dict.fromkeys((row.get("instance"), row.get("pid")) for row in seen)
        )
        is_expected = key in wanted
        rows.append(
            EventRow(
                event=key[0],
                model=key[1],
                entry_id=key[2],
                entry_version=key[3],
                expected=is_expected,
                deliveries=len(webhook_ids),
                attempts=len(seen),
                webhook_ids=webhook_ids,
                senders=[{"instance": i, "pid": p} for i, p in senders],
                invalid_signatures=sum(
                    1 for row in seen if row.get("signature_valid") is False
                ),
                duplicated=max(0, len(webhook_ids) - 1),
                lost=is_expected and not webhook_ids,
            )
        )
    return rows


def migration_rows(runs: list[Row]) -> list[MigrationRow]:
    by_revision: dict[Any, list[Row]] = defaultdict(list)
    for run in runs:
        by_revision[run.get("revision")].append(
            {k: run.get(k) for k in ("instance", "pid", "started_at", "finished_at")}
        )
    return [
        MigrationRow(revision=revision, runs=len(who), by=who)
        for revision, who in by_revision.items()
    ]


def failed_instances(instances: list[Row]) -> list[Row]:
    """Instances that failed before the harness stopped them: the runner
    sets ``error`` on those; the exit code of a stop it asked for does not
    count (uvicorn re-raises SIGTERM after a clean shutdown, so that is -15)."""
    return [
        {k: instance.get(k) for k in ("id", "pid", "exit_code", "error")}
        for instance in instances
        if instance.get("error")
    ]


def fire_latency_p95_ms(
    emails: list[Row], mail_tasks: set[str], clock_offset_seconds: float
) -> dict[str, float]:
    """Per mail task, the 95th percentile of email arrival minus occurrence."""
    offset = timedelta(seconds=clock_offset_seconds)
    latencies: dict[str, list[float]] = defaultdict(list)
    for mail in emails:
        task = mail.get("task")
        if task not in mail_tasks:
            continue
        received = parse_instant(mail.get("received_at"))
        occurrence = parse_instant(mail.get("occurrence"))
        if received is None or occurrence is None:
            continue
        latency = (received + offset - occurrence) / timedelta(milliseconds=1)
        latencies[task].append(latency)
    return {
        task: round(percentile(values, 95), 1) for task, values in latencies.items()
    }


def percentile(values: list[float], percent: float) -> float:
    """Nearest-rank percentile: the smallest value with percent% at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def parse_instant(text: Any) -> datetime | None:
    """An ISO 8601 instant as aware UTC; None when it is not one.

    A time without a zone is taken as UTC: every ledger writes UTC.
    """
    if not isinstance(text, str):
        return None
    try:
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)


def instant_key(text: Any) -> str:
    """One spelling per instant, so '09:00:00Z' and '09:00:00.000+00:00' match."""
    instant = parse_instant(text)
    if instant is None:
        return str(text)
    return instant.isoformat().replace("+00:00", "Z")


def event_key(key: EventKey) -> EventKey:
    """An event identity with ids as numbers where they are numbers, so 7 and
    '7' (a JSON body against a path parameter) name the same entry."""
    event, model, entry_id, entry_version = key
    return (event, model, _ident(entry_id), _ident(entry_version))


def _ident(value: Any) -> Any:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


def _by_time(key: tuple[str, str]) -> tuple[str, str]:
    task, at = key
    return (at, task)


def _by_repr(key: EventKey) -> tuple[str, ...]:
    return tuple(str(part) for part in key)


def _metrics(
    ledgers: Ledgers,
    occurrences: list[OccurrenceRow],
    events: list[EventRow],
    migrations: list[MigrationRow],
    failed: list[Row],
    latency: dict[str, float],
) -> dict[str, float | list[float]]:
    """Figures claims can name: totals, and `name[key]` lists per task/event."""
    occurrence_duplicates = sum(row.duplicated for row in occurrences)
    occurrences_lost = sum(1 for row in occurrences if row.lost)
    event_duplicates = sum(row.duplicated for row in events)
    events_lost = sum(1 for row in events if row.lost)
    metrics: dict[str, float | list[float]] = {
        "occurrences": len(occurrences),
        "executions": len(ledgers.cron_executions),
        "duplicates": occurrence_duplicates + event_duplicates,
        "lost": occurrences_lost + events_lost,
        "occurrence_duplicates": occurrence_duplicates,
        "occurrences_lost": occurrences_lost,
        "event_duplicates": event_duplicates,
        "events_lost": events_lost,
        "emails": len(ledgers.emails),
        "webhooks": sum(row.deliveries for row in events),
        "webhook_attempts": len(ledgers.webhooks),
        "invalid_signatures": sum(row.invalid_signatures for row in events),
        "migration_runs": len(ledgers.migration_runs),
        "max_migration_runs_per_revision": max(
            (row.runs for row in migrations), default=0
        ),
        "failed_instances": len(failed),
    }
    for occurrence in occurrences:
        task = occurrence.task
        _append(metrics, f"executions_per_occurrence[{task}]", occurrence.attempted)
        _append(metrics, f"emails_per_occurrence[{task}]", occurrence.emails)
    for event in events:
        _append(metrics, f"deliveries_per_event[{event.event}]", event.deliveries)
    for task, value in latency.items():
        metrics[f"fire_latency_p95_ms[{task}]"] = value
    return metrics


def _append(metrics: dict[str, float | list[float]], name: str, value: int) -> None:
    values = metrics.setdefault(name, [])
    assert isinstance(values, list)
    values.append(value)
