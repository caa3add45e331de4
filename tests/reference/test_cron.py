from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from freezegun import freeze_time
from sqlalchemy import Engine, select

from reference.config import Settings
from reference.cron import (
    CronContext,
    CronService,
    CronTask,
    crontab_trigger,
    occurrence_at,
    previous_occurrence,
)
from reference.cron_tasks import TASKS, publish_window
from reference.db import session_factory
from reference.models import Article, CronExecution, Event
from tests.reference.support import Inbox


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


DAILY = CronTask(task=TASKS["daily-digest"].task, rule="0 9 * * *").trigger()
MINUTELY = CronTask(task=TASKS["daily-digest"].task, rule="* * * * *").trigger()


@pytest.mark.parametrize(
    ("now", "occurrence"),
    [
        ("2026-01-01T09:00:00", "2026-01-01T09:00:00"),
        ("2026-01-01T09:00:00.004", "2026-01-01T09:00:00"),
        ("2026-01-01T09:00:29.9", "2026-01-01T09:00:00"),
    ],
)
def test_occurrence_of_a_late_start(now: str, occurrence: str) -> None:
    assert occurrence_at(DAILY, at(now)) == at(occurrence)
    assert occurrence_at(MINUTELY, at(now)) == at(occurrence)


def test_no_occurrence_outside_the_grace() -> None:
    with pytest.raises(ValueError, match="^no occurrence of "):
        occurrence_at(DAILY, at("2026-01-01T09:00:31"))
    with pytest.raises(ValueError, match="^no occurrence of "):
        occurrence_at(DAILY, at("2026-01-01T08:59:59"))


def test_previous_occurrence() -> None:
    assert previous_occurrence(DAILY, at("2026-01-01T09:00")) == at("2025-12-31T09:00")
    assert previous_occurrence(MINUTELY, at("2026-01-01T00:00")) == at(
        "2025-12-31T23:59"
    )
    mondays = CronTask(task=TASKS["daily-digest"].task, rule="30 8 * * mon").trigger()
    assert previous_occurrence(mondays, at("2026-01-05T08:30")) == at(
        "2025-12-29T08:30"
    )
    paris = CronTask(
        task=TASKS["daily-digest"].task, rule="0 9 * * *", tz="Europe/Paris"
    ).trigger()
    assert occurrence_at(paris, at("2026-07-01T07:00:01")) == at("2026-07-01T07:00")
    assert previous_occurrence(paris, at("2026-07-01T07:00")) == at("2026-06-30T07:00")


# Thursday 2026-01-01 to Wednesday 2026-01-07: every weekday once.
WEEK = at("2026-01-01T00:00")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
EVERY_DAY = set(DAYS)
WEEKDAYS = {"Mon", "Tue", "Wed", "Thu", "Fri"}


def fire_days(trigger: CronTrigger) -> set[str]:
    """The days of the week on which trigger fires in WEEK."""
    days = set()
    fire = trigger.get_next_fire_time(None, WEEK)
    while fire is not None and fire < WEEK + timedelta(days=7):
        days.add(DAYS[fire.weekday()])
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    return days


def test_crontab_day_numbers_count_from_sunday() -> None:
    thursday = CronTask(task=TASKS["daily-digest"].task, rule="0 9 * * 4").trigger()
    assert thursday.get_next_fire_time(None, WEEK) == at("2026-01-01T09:00")


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        ("4", {"Thu"}),
        ("0", {"Sun"}),
        ("7", {"Sun"}),
        ("0,7", {"Sun"}),
        ("1,3", {"Mon", "Wed"}),
        ("1-5", WEEKDAYS),
        ("0-6", EVERY_DAY),
        ("0-7", EVERY_DAY),
        ("5-7", {"Fri", "Sat", "Sun"}),
        ("*", EVERY_DAY),
        ("*/2", {"Sun", "Tue", "Thu", "Sat"}),
        ("*/7", {"Sun"}),
        ("1-5/2", {"Mon", "Wed", "Fri"}),
        ("0-6/3", {"Sun", "Wed", "Sat"}),
        ("mon-fri", WEEKDAYS),
        ("sat,sun", {"Sat", "Sun"}),
        ("MON", {"Mon"}),
        ("sun,3", {"Sun", "Wed"}),
    ],
)
def test_crontab_trigger_reads_days_as_crontab_does(
    days: str, expected: set[str]
) -> None:
    assert fire_days(crontab_trigger(f"0 9 * * {days}", "UTC")) == expected


@pytest.mark.parametrize(
    "rule",
    ["*/15 9-17 1,15 jan-jun *", "0 9 last * mon-fri", "30 8 * * sat,sun", "0 0 * * *"],
)
def test_crontab_trigger_leaves_names_and_the_other_fields_alone(rule: str) -> None:
    trigger = crontab_trigger(rule, "Europe/Paris")
    assert str(trigger) == str(CronTrigger.from_crontab(rule, "Europe/Paris"))
    assert trigger.timezone == ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    ("rule", "tz", "message"),
    [
        (
            "0 9 * *",
            "UTC",
            r"^cron rule '0 9 \* \*' has 4 fields; write five: minute hour "
            r"day-of-month month day-of-week, like '0 9 \* \* 1-5'$",
        ),
        ("0 9 * * * *", "UTC", r"^cron rule '0 9 \* \* \* \*' has 6 fields"),
        ("", "UTC", r"^cron rule '' has 0 fields"),
        (
            "0 9 * * 8",
            "UTC",
            r"^day of week '8' in cron rule '0 9 \* \* 8' is out of range; days "
            r"run 0-7 from Sunday \(0 and 7 are both Sunday\), or use names "
            r"like mon$",
        ),
        ("0 9 * * 1-9", "UTC", r"^day of week '1-9' in .* is out of range"),
        (
            "0 9 * * 5-1",
            "UTC",
            r"^day-of-week range '5-1' in cron rule '0 9 \* \* 5-1' runs "
            r"backwards; write it low to high, like 1-5$",
        ),
        (
            "0 9 * * */0",
            "UTC",
            r"^day-of-week step in '\*/0' of cron rule .* must be 1 or more$",
        ),
        (
            "0 9 * * 5/2",
            "UTC",
            r"^day of week '5/2' in cron rule .* is not a crontab form; write a "
            r"number, a range or a step, like 1, 1-5, \*/2 or 1-5/2$",
        ),
        ("0 9 * * 1-fri", "UTC", r"^day of week '1-fri' in .* is not a crontab"),
        (
            "0 9 * * mon-fri/2",
            "UTC",
            r"^day of week 'mon-fri/2' in cron rule .* has a step on day names, "
            r"which APScheduler 3 ignores; write it with numbers, like 1-5/2$",
        ),
        (
            "0 9 * * sun-sat",
            "UTC",
            r"^day-of-week range 'sun-sat' in cron rule .* runs backwards: "
            r"APScheduler's day names run mon to sun; write a list, like "
            r"sun,mon-sat, or numbers, like 0-6$",
        ),
        (
            "61 9 * * *",
            "UTC",
            r"^cron rule '61 9 \* \* \*' is not valid: .*maximum value \(59\)",
        ),
        ("0 9 * * xyz", "UTC", r"^cron rule .* is not valid: .*weekday name"),
        (
            "0 9 * * *",
            "Mars/Olympus",
            r"^time zone 'Mars/Olympus' of cron rule '0 9 \* \* \*' is unknown; "
            r"use an IANA name, like 'Europe/Paris'$",
        ),
        ("0 9 * * *", "", r"^time zone '' of cron rule .* is unknown"),
    ],
)
def test_crontab_trigger_refuses_bad_rules(rule: str, tz: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        crontab_trigger(rule, tz)


def _article(
    engine: Engine,
    title: str,
    publish_at: datetime | None,
    published_at: datetime | None = None,
) -> int:
    now = at("2026-01-01T08:00")
    with session_factory(engine).begin() as session:
        article = Article(
            title=title,
            body="",
            publish_at=publish_at,
            published_at=published_at,
            version=1,
            created_at=now,
            updated_at=now,
        )
        session.add(article)
        session.flush()
        return article.id


def test_publish_window_is_a_function_of_the_occurrence(engine: Engine) -> None:
    # Published by the occurrence before: not due again.
    early = _article(engine, "early", at("2026-01-01T08:58:59"), at("2026-01-01T08:59"))
    inside = _article(engine, "inside", at("2026-01-01T08:59:30"))
    edge = _article(engine, "edge", at("2026-01-01T09:00:00"))
    _article(engine, "late", at("2026-01-01T09:00:01"))
    _article(engine, "unscheduled", None)

    window = (at("2026-01-01T08:59"), at("2026-01-01T09:00"))
    published = publish_window(engine, *window, "a")
    assert [e["id"] for e in published] == [inside, edge]
    assert {e["published_at"] for e in published} == {"2026-01-01T09:00:00Z"}
    assert {e["version"] for e in published} == {1}

    # A second execution of the same occurrence (another instance) publishes
    # the same articles again: the duplicate the project reproduces.
    assert [e["id"] for e in publish_window(engine, *window, "b")] == [inside, edge]
    with session_factory(engine)() as session:
        events = session.execute(
            select(Event.event, Event.entry_id, Event.entry_version, Event.origin)
            .where(Event.event == "entry.publish")
            .order_by(Event.id)
        ).all()
        early_article = session.get(Article, early)
    assert events == [
        ("entry.publish", inside, 1, "a"),
        ("entry.publish", edge, 1, "a"),
        ("entry.publish", inside, 1, "b"),
        ("entry.publish", edge, 1, "b"),
    ]
    assert early_article is not None
    assert early_article.published_at == at("2026-01-01T08:59")


def _publishes(engine: Engine) -> list[tuple[int, str]]:
    with session_factory(engine)() as session:
        rows = session.execute(
            select(Event.entry_id, Event.origin)
            .where(Event.event == "entry.publish")
            .order_by(Event.id)
        )
        return [(entry_id, origin) for entry_id, origin in rows]


def test_an_overdue_article_is_published_once_by_the_next_occurrence(
    engine: Engine,
) -> None:
    # Created at 08:00 with publish_at 07:00, already past: no window holds it.
    overdue = _article(engine, "overdue", at("2026-01-01T07:00"))
    _article(engine, "done", at("2026-01-01T07:00"), at("2026-01-01T07:00"))

    nine = (at("2026-01-01T08:59"), at("2026-01-01T09:00"))
    published = publish_window(engine, *nine, "a")
    assert [(e["id"], e["published_at"]) for e in published] == [
        (overdue, "2026-01-01T09:00:00Z")
    ]
    # Neither a second execution of 09:00 nor the next occurrence again.
    assert publish_window(engine, *nine, "b") == []
    assert (
        publish_window(engine, at("2026-01-01T09:00"), at("2026-01-01T09:01"), "a")
        == []
    )
    assert _publishes(engine) == [(overdue, "a")]


async def _boom(context: CronContext) -> None:
    raise RuntimeError(f"boom at {context.occurrence:%H:%M}")


def test_every_execution_is_in_the_ledger(engine: Engine, settings: Settings) -> None:
    seen: list[tuple[datetime, datetime | None]] = []

    async def remember(context: CronContext) -> None:
        seen.append((context.occurrence, context.previous_occurrence))

    tasks = {
        "remember": CronTask(task=remember, rule="* * * * *"),
        "boom": CronTask(task=_boom, rule="* * * * *"),
    }
    cron = CronService(engine, settings, tasks)
    occurrence, previous = at("2026-01-01T09:00"), at("2026-01-01T08:59")
    ok = asyncio.run(cron.execute("remember", occurrence, previous))
    failed = asyncio.run(cron.execute("boom", occurrence, previous))

    assert seen == [(occurrence, previous)]
    assert (ok.outcome, ok.error) == ("ok", None)
    assert (failed.outcome, failed.error) == ("error", "RuntimeError: boom at 09:00")
    with session_factory(engine)() as session:
        rows = [r.to_dict() for r in session.scalars(select(CronExecution))]
    assert [(r["task"], r["occurrence"], r["outcome"]) for r in rows] == [
        ("remember", "2026-01-01T09:00:00Z", "ok"),
        ("boom", "2026-01-01T09:00:00Z", "error"),
    ]
    assert all(r["instance"] == "test-a" and r["finished_at"] for r in rows)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_scheduler_fires_the_digest_at_its_occurrence(
    settings: Settings, engine: Engine, smtp_inbox: Inbox
) -> None:
    """With the wall clock pinned just before 09:00, APScheduler fires the
    digest and the execution knows it runs for 09:00, not 'now'."""
    inbox = smtp_inbox
    mail = settings.mail.model_copy(update={"smtp_port": smtp_inbox.port})  # type: ignore[attr-defined]
    settings = settings.model_copy(update={"mail": mail})

    async def run() -> None:
        cron = CronService(engine, settings, {"daily-digest": TASKS["daily-digest"]})
        await cron.start()
        try:
            for _ in range(100):
                if inbox.messages:
                    break
                await asyncio.sleep(0.05)
        finally:
            await cron.stop()

    with freeze_time(at("2026-01-01T08:59:59.6"), tick=True, real_asyncio=True):
        asyncio.run(run())

    assert len(inbox.messages) == 1
    message = inbox.messages[0]
    assert message["X-Clusterproof-Task"] == "daily-digest"
    assert message["X-Clusterproof-Occurrence"] == "2026-01-01T09:00:00Z"
    assert message["X-Clusterproof-Instance"] == "test-a"
    assert message["X-Clusterproof-Pid"].isdigit()
    assert message["Message-ID"].startswith("<")
    assert message["To"] == settings.mail.digest_to
    with session_factory(engine)() as session:
        execution = session.scalars(select(CronExecution)).one()
    assert execution.occurrence == at("2026-01-01T09:00")
    assert execution.outcome == "ok"
    assert execution.started_at - execution.occurrence < timedelta(seconds=2)
