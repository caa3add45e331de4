from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from harness.checker import Expected, Ledgers, check, percentile, summary

NINE = "2026-01-01T09:00:00Z"
TEN = "2026-01-01T10:00:00Z"
ELEVEN = "2026-01-01T11:00:00Z"


def email(occurrence: str, instance: str, pid: int, received_at: str) -> dict:
    return {
        "received_at": received_at,
        "message_id": f"<{instance}-{occurrence}>",
        "task": "daily-digest",
        "occurrence": occurrence,
        "instance": instance,
        "pid": pid,
        "to": ["editors@example.test"],
        "subject": "Daily digest",
    }


def run(task: str, occurrence: str, instance: str, pid: int, outcome="ok") -> dict:
    return {
        "task": task,
        "occurrence": occurrence,
        "instance": instance,
        "pid": pid,
        "host": "h",
        "started_at": occurrence,
        "finished_at": occurrence,
        "outcome": outcome,
        "error": None if outcome == "ok" else "boom",
    }


def hook(webhook_id: str, entry_id: int, version: int, instance="a", pid=1) -> dict:
    return {
        "received_at": "2026-01-01T09:00:01Z",
        "webhook_id": webhook_id,
        "webhook_timestamp": "1767258001",
        "signature_valid": True,
        "event": "entry.publish",
        "model": "article",
        "entry_id": entry_id,
        "entry_version": version,
        "instance": instance,
        "pid": pid,
        "status": 200,
    }


def by_occurrence(result: Any) -> dict[tuple[str, str], Any]:
    return {(row.task, row.occurrence): row for row in result.occurrences}


def test_a_digest_mailed_twice_is_a_duplicate_and_one_never_mailed_is_lost() -> None:
    ledgers = Ledgers(
        emails=[
            email(NINE, "a", 11, "2026-01-01T09:00:00.200Z"),
            email(NINE, "b", 22, "2026-01-01T09:00:00.300Z"),
        ],
        cron_executions=[
            run("daily-digest", NINE, "a", 11),
            run("daily-digest", NINE, "b", 22),
            # Ran, but the email never arrived: still lost.
            run("daily-digest", TEN, "a", 11),
        ],
    )
    expected = Expected(
        occurrences=[("daily-digest", NINE), ("daily-digest", TEN)],
        mail_tasks={"daily-digest"},
    )

    result = check(ledgers, expected)
    rows = by_occurrence(result)

    nine = rows[("daily-digest", NINE)]
    assert (nine.attempted, nine.executed, nine.emails) == (2, 2, 2)
    assert (nine.duplicated, nine.lost) == (1, False)
    assert [(e["instance"], e["pid"]) for e in nine.executions] == [
        ("a", 11),
        ("b", 22),
    ]
    ten = rows[("daily-digest", TEN)]
    assert (ten.executed, ten.emails, ten.duplicated, ten.lost) == (1, 0, 0, True)

    assert result.metrics["duplicates"] == 1
    assert result.metrics["lost"] == 1
    assert result.metrics["emails_per_occurrence[daily-digest]"] == [2, 0]
    assert result.metrics["executions_per_occurrence[daily-digest]"] == [2, 1]


def test_a_task_without_email_is_judged_on_runs_that_ended_ok() -> None:
    ledgers = Ledgers(
        cron_executions=[
            run("publish-scheduled", NINE, "a", 11),
            run("publish-scheduled", NINE, "b", 22),
            run("publish-scheduled", TEN, "a", 11, outcome="error"),
        ]
    )
    expected = Expected(
        occurrences=[("publish-scheduled", NINE), ("publish-scheduled", TEN)]
    )

    rows = by_occurrence(check(ledgers, expected))

    assert rows[("publish-scheduled", NINE)].duplicated == 1
    ten = rows[("publish-scheduled", TEN)]
    assert (ten.attempted, ten.executed, ten.lost) == (1, 0, True)


def test_an_occurrence_seen_but_not_expected_is_listed() -> None:
    ledgers = Ledgers(cron_executions=[run("daily-digest", ELEVEN, "a", 11)])
    expected = Expected(occurrences=[], mail_tasks=set())

    (row,) = check(ledgers, expected).occurrences

    assert (row.task, row.occurrence, row.expected, row.lost) == (
        "daily-digest",
        ELEVEN,
        False,
        False,
    )


def test_one_instant_spelt_two_ways_is_one_occurrence() -> None:
    ledgers = Ledgers(
        emails=[email("2026-01-01T09:00:00.000+00:00", "a", 1, NINE)],
        cron_executions=[run("daily-digest", "2026-01-01T09:00:00+00:00", "a", 1)],
    )
    expected = Expected(
        occurrences=[("daily-digest", NINE)], mail_tasks={"daily-digest"}
    )

    (row,) = check(ledgers, expected).occurrences

    assert (row.occurrence, row.attempted, row.emails, row.lost) == (NINE, 1, 1, False)


def test_events_report_a_duplicate_and_a_loss() -> None:
    ledgers = Ledgers(
        webhooks=[
            hook("msg_1", entry_id=7, version=1, instance="a", pid=11),
            hook("msg_2", entry_id=7, version=1, instance="b", pid=22),
        ]
    )
    expected = Expected(
        events=[
            ("entry.publish", "article", 7, 1),
            ("entry.publish", "article", 8, 1),
        ]
    )

    result = check(ledgers, expected)
    rows = {row.key: row for row in result.events}

    seven = rows[("entry.publish", "article", 7, 1)]
    assert (seven.deliveries, seven.attempts, seven.duplicated) == (2, 2, 1)
    assert seven.senders == [{"instance": "a", "pid": 11}, {"instance": "b", "pid": 22}]
    eight = rows[("entry.publish", "article", 8, 1)]
    assert (eight.deliveries, eight.lost) == (0, True)
    assert result.metrics["deliveries_per_event[entry.publish]"] == [2, 0]
    assert (result.metrics["duplicates"], result.metrics["lost"]) == (1, 1)


def test_retries_of_one_delivery_count_once() -> None:
    retried = hook("msg_1", entry_id=7, version=1)
    ledgers = Ledgers(
        webhooks=[{**retried, "status": 500}, {**retried, "status": 500}, retried]
    )
    expected = Expected(events=[("entry.publish", "article", "7", "1")])

    result = check(ledgers, expected)
    (row,) = result.events

    assert (row.deliveries, row.attempts, row.duplicated, row.lost) == (1, 3, 0, False)
    assert row.expected is True
    assert result.metrics["webhooks"] == 1
    assert result.metrics["webhook_attempts"] == 3


def test_migrations_and_failed_instances() -> None:
    ledgers = Ledgers(
        migration_runs=[
            {"revision": "0001", "instance": "a", "pid": 11, "started_at": NINE},
            {"revision": "0001", "instance": "b", "pid": 22, "started_at": NINE},
            {"revision": "0002", "instance": "a", "pid": 11, "started_at": NINE},
        ],
        instances=[
            {"id": "a", "pid": 11, "exit_code": 0, "error": None},
            {"id": "b", "pid": 22, "exit_code": 3, "error": "unique violation"},
            {"id": "c", "pid": 33, "exit_code": None, "error": None},
        ],
    )

    result = check(ledgers, Expected())

    runs = {row.revision: row for row in result.migrations}
    assert runs["0001"].runs == 2
    assert [who["instance"] for who in runs["0001"].by] == ["a", "b"]
    assert result.failed_instances == [
        {"id": "b", "pid": 22, "exit_code": 3, "error": "unique violation"}
    ]
    assert result.metrics["max_migration_runs_per_revision"] == 2
    assert result.metrics["migration_runs"] == 3
    assert result.metrics["failed_instances"] == 1


def test_fire_latency_is_measured_on_the_pinned_clock() -> None:
    # The sink's real clock says 2030-06-01; pinned minus real maps its
    # received_at back onto the pinned timeline of the 09:00 occurrence.
    real = datetime(2030, 6, 1, tzinfo=UTC)
    offset = (datetime(2026, 1, 1, 9, tzinfo=UTC) - real).total_seconds()
    ledgers = Ledgers(
        emails=[
            email(NINE, "a", 1, f"2030-06-01T00:00:00.{ms:03d}Z")
            for ms in (100, 200, 300, 400, 900)
        ]
    )
    expected = Expected(mail_tasks={"daily-digest"}, clock_offset_seconds=offset)

    result = check(ledgers, expected)

    assert result.fire_latency_p95_ms == {"daily-digest": 900.0}
    assert result.metrics["fire_latency_p95_ms[daily-digest]"] == 900.0


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 95) == 95
    assert percentile([5.0], 95) == 5.0


def test_summary_holds_the_result_json_fields() -> None:
    ledgers = Ledgers(
        emails=[email(NINE, "a", 1, NINE)],
        webhooks=[hook("msg_1", 7, 1)],
        cron_executions=[run("daily-digest", NINE, "a", 1)],
        migration_runs=[{"revision": "0001", "instance": "a", "pid": 1}],
    )
    expected = Expected(
        occurrences=[("daily-digest", NINE)],
        events=[("entry.publish", "article", 7, 1)],
        mail_tasks={"daily-digest"},
    )

    fields = summary(check(ledgers, expected))

    assert fields == {
        "occurrences": 1,
        "executions": 1,
        "duplicates": 0,
        "lost": 0,
        "emails": 1,
        "webhooks": 1,
        "migration_runs": 1,
        "fire_latency_p95_ms": {"daily-digest": 0.0},
    }


def test_details_are_plain_data() -> None:
    ledgers = Ledgers(webhooks=[hook("msg_1", 7, 1)])
    details = check(ledgers, Expected()).details()
    assert json.loads(json.dumps(details))["events"][0]["entry_id"] == 7


# Ledgers drawn at random: a few tasks, instants and entries, with runs,
# emails and webhook attempts (retries reuse a webhook-id) in any number.
TASKS = st.sampled_from(["daily-digest", "publish-scheduled"])
INSTANTS = st.sampled_from([NINE, TEN, ELEVEN])
ENTRIES = st.integers(min_value=1, max_value=3)


@st.composite
def random_run(draw: st.DrawFn) -> tuple[Ledgers, Expected]:
    runs = draw(
        st.lists(
            st.builds(
                run,
                TASKS,
                INSTANTS,
                st.sampled_from(["a", "b"]),
                st.just(1),
                st.sampled_from(["ok", "error"]),
            ),
            max_size=8,
        )
    )
    emails = [email(at, "a", 1, at) for at in draw(st.lists(INSTANTS, max_size=6))]
    hooks = [
        hook(f"msg_{entry}_{n}", entry, 1)
        for entry, n in draw(
            st.lists(st.tuples(ENTRIES, st.integers(0, 2)), max_size=10)
        )
    ]
    expected = Expected(
        occurrences=draw(st.lists(st.tuples(TASKS, INSTANTS), unique=True)),
        events=[
            ("entry.publish", "article", entry, 1) for entry in draw(st.sets(ENTRIES))
        ],
        mail_tasks={"daily-digest"},
    )
    return Ledgers(emails=emails, webhooks=hooks, cron_executions=runs), expected


@given(random_run())
def test_duplicates_and_distinct_deliveries_add_up(
    drawn: tuple[Ledgers, Expected],
) -> None:
    ledgers, expected = drawn

    result = check(ledgers, expected)

    # Counted independently of the checker: one delivery per webhook-id.
    deliveries = len({row["webhook_id"] for row in ledgers.webhooks})
    delivered = sum(1 for row in result.events if row.deliveries > 0)
    duplicates = sum(row.duplicated for row in result.events)
    assert duplicates + delivered == deliveries == result.metrics["webhooks"]


@given(random_run())
def test_lost_is_exactly_the_expected_without_effect(
    drawn: tuple[Ledgers, Expected],
) -> None:
    ledgers, expected = drawn

    result = check(ledgers, expected)

    mailed = {(row["task"], row["occurrence"]) for row in ledgers.emails}
    ran_ok = {
        (row["task"], row["occurrence"])
        for row in ledgers.cron_executions
        if row["outcome"] == "ok"
    }
    had_effect = {key for key in mailed if key[0] in expected.mail_tasks} | {
        key for key in ran_ok if key[0] not in expected.mail_tasks
    }
    lost = {(row.task, row.occurrence) for row in result.occurrences if row.lost}
    assert lost == set(expected.occurrences) - had_effect

    lost_events = {row.key for row in result.events if row.lost}
    delivered = {
        ("entry.publish", "article", row["entry_id"], 1) for row in ledgers.webhooks
    }
    assert lost_events == set(expected.events) - delivered
