"""Cron: runs the tasks of cron_tasks.py on APScheduler, one ledger row each.

Every process that runs cron schedules every task, as a CMS does today; two
such processes both execute each occurrence. That duplicate is what this
project reproduces, so nothing here coordinates with other processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Engine, update

from reference.config import Settings
from reference.db import session_factory
from reference.models import CronExecution, iso, utc_now

MISFIRE_GRACE = timedelta(seconds=30)
# A previous occurrence further back than this is not searched for; a rule
# firing less than once in two years has none.
PREVIOUS_SEARCH_LIMIT = timedelta(days=800)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CronContext:
    """What a task execution knows: which occurrence it runs, and where."""

    task: str
    occurrence: datetime
    previous_occurrence: datetime | None
    instance: str
    settings: Settings
    engine: Engine
    wake_webhooks: Callable[[], None]


@dataclass(frozen=True)
class CronTask:
    """A task declared Strapi-style: the function and its options."""

    task: Callable[[CronContext], Awaitable[None]]
    rule: str
    tz: str = "UTC"

    def trigger(self) -> CronTrigger:
        return crontab_trigger(self.rule, self.tz)


# crontab numbers the days of the week from Sunday: 0 and 7 are Sunday, 1 is
# Monday. APScheduler 3 numbers them from Monday (0 is Monday, 6 Sunday, 7 an
# error), and keeps that for compatibility within 3.x. Day names mean the
# same day in both, so each numeric day-of-week item is rewritten as a list
# of names: crontab's 1-5/2 becomes mon,wed,fri. A list and never a name
# range, because APScheduler's name ranges run mon to sun: crontab's 0-6
# would become sun-sat, which APScheduler refuses as backwards.
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab 0-6
_APSCHEDULER_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_RANGE = re.compile(r"(?P<first>\d+)(?:-(?P<last>\d+)(?:/(?P<step>\d+))?)?")
_EVERY_NTH_DAY = re.compile(r"\*/(?P<step>\d+)")
_NAMED_DAYS = re.compile(r"(?P<first>[a-z]+)(?:-(?P<last>[a-z]+))?(?P<step>/.*)?", re.I)


def crontab_trigger(rule: str, tz: str) -> CronTrigger:
    """A CronTrigger for a five-field crontab rule in time zone tz, with the
    days of the week numbered as crontab numbers them.

    ``crontab_trigger("0 9 * * 1-5", "UTC")`` fires at 09:00 UTC from Monday
    to Friday, as ``CronTrigger.from_crontab("0 9 * * mon,tue,wed,thu,fri")``
    does. Raises ValueError for a rule or a time zone it cannot use.
    """
    fields = rule.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron rule {rule!r} has {len(fields)} fields; write five: minute "
            "hour day-of-month month day-of-week, like '0 9 * * 1-5'"
        )
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"time zone {tz!r} of cron rule {rule!r} is unknown; "
            "use an IANA name, like 'Europe/Paris'"
        ) from None

    days = ",".join(_day_names(item, rule) for item in fields[4].split(","))
    try:
        return CronTrigger.from_crontab(" ".join([*fields[:4], days]), timezone=zone)
    except ValueError as exc:
        raise ValueError(f"cron rule {rule!r} is not valid: {exc}") from None


def _day_names(item: str, rule: str) -> str:
    """One day-of-week list item of rule, numbers turned into day names:
    ``"1-5/2"`` gives ``"mon,wed,fri"``; names and ``*`` come back as given."""
    if every := _EVERY_NTH_DAY.fullmatch(item):
        return _numbered_days(item, rule, 0, 6, int(every["step"]))
    if numbers := _DAY_RANGE.fullmatch(item):
        first = int(numbers["first"])
        last = int(numbers["last"] or first)
        return _numbered_days(item, rule, first, last, int(numbers["step"] or 1))
    if named := _NAMED_DAYS.fullmatch(item):
        _check_named_days(named, item, rule)
    elif any(char.isdigit() for char in item):
        raise ValueError(
            f"day of week {item!r} in cron rule {rule!r} is not a crontab form; "
            "write a number, a range or a step, like 1, 1-5, */2 or 1-5/2"
        )
    return item  # names, "*", or something from_crontab reports


def _numbered_days(item: str, rule: str, first: int, last: int, step: int) -> str:
    if not 0 <= first <= 7 or not 0 <= last <= 7:
        raise ValueError(
            f"day of week {item!r} in cron rule {rule!r} is out of range; days "
            "run 0-7 from Sunday (0 and 7 are both Sunday), or use names like mon"
        )
    if first > last:
        raise ValueError(
            f"day-of-week range {item!r} in cron rule {rule!r} runs backwards; "
            "write it low to high, like 1-5"
        )
    if step < 1:
        raise ValueError(
            f"day-of-week step in {item!r} of cron rule {rule!r} must be 1 or more"
        )
    days = sorted({day % 7 for day in range(first, last + 1, step)})
    return ",".join(_DAY_NAMES[day] for day in days)


def _check_named_days(named: re.Match[str], item: str, rule: str) -> None:
    # Two name forms APScheduler gets wrong quietly or explains badly.
    if named["step"]:
        raise ValueError(
            f"day of week {item!r} in cron rule {rule!r} has a step on day names, "
            "which APScheduler 3 ignores; write it with numbers, like 1-5/2"
        )
    first, last = named["first"].lower(), (named["last"] or "").lower()
    if (
        first in _APSCHEDULER_DAYS
        and last in _APSCHEDULER_DAYS
        and _APSCHEDULER_DAYS.index(first) > _APSCHEDULER_DAYS.index(last)
    ):
        raise ValueError(
            f"day-of-week range {item!r} in cron rule {rule!r} runs backwards: "
            "APScheduler's day names run mon to sun; write a list, like "
            "sun,mon-sat, or numbers, like 0-6"
        )


# APScheduler 3 calls a job with the arguments it was added with and never
# tells it which scheduled instant it is running for. A task whose effect
# depends on its occurrence (the publish window, the digest header) must
# recompute it. The scheduler runs a job at or after its fire time and drops
# it when more than the misfire grace late, so the occurrence is the first
# fire time at or after (now - grace); with a grace shorter than the rule's
# period there is exactly one such instant not after now.


def occurrence_at(
    trigger: CronTrigger, now: datetime, grace: timedelta = MISFIRE_GRACE
) -> datetime:
    """The occurrence an execution starting at now runs for, in UTC."""
    fire = trigger.get_next_fire_time(None, now - grace)
    if fire is None or fire > now:
        raise ValueError(
            f"no occurrence of {trigger} between {iso(now - grace)} and {iso(now)}"
        )
    return fire.astimezone(UTC)


def previous_occurrence(trigger: CronTrigger, occurrence: datetime) -> datetime | None:
    """The fire time just before occurrence, in UTC (None if there is none).

    CronTrigger only looks forward, so look back from occurrence over a
    doubling span until a fire time turns up, then step forward to the last
    one before occurrence.
    """
    span = timedelta(minutes=1)
    while span <= PREVIOUS_SEARCH_LIMIT:
        fire = trigger.get_next_fire_time(None, occurrence - span)
        if fire is not None and fire < occurrence:
            while True:
                after = trigger.get_next_fire_time(None, fire + timedelta(seconds=1))
                if after is None or after >= occurrence:
                    return fire.astimezone(UTC)
                fire = after
        span *= 2
    return None


class CronService:
    """Schedules every task on the running loop and records each execution."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        tasks: Mapping[str, CronTask],
        *,
        wake_webhooks: Callable[[], None] = lambda: None,
    ) -> None:
        self._engine = engine
        self._sessions = session_factory(engine)
        self._settings = settings
        self._tasks = dict(tasks)
        self._triggers = {name: spec.trigger() for name, spec in self._tasks.items()}
        self._wake_webhooks = wake_webhooks
        self._scheduler: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task[object]] = set()

    @property
    def instance(self) -> str:
        return self._settings.instance.id

    async def start(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        for name, trigger in self._triggers.items():
            self._scheduler.add_job(
                self._on_fire,
                trigger,
                args=[name],
                id=name,
                misfire_grace_time=int(MISFIRE_GRACE.total_seconds()),
                coalesce=True,
            )
        self._scheduler.start()
        log.info("cron started: %s", ", ".join(self._tasks) or "no tasks")

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop firing; let executions already running finish first."""
        if self._scheduler is None:
            return
        self._scheduler.pause()
        if self._running:
            log.info("cron waiting for %d running execution(s)", len(self._running))
            await asyncio.wait(self._running, timeout=timeout)
        # The asyncio executor cancels whatever still runs at shutdown.
        self._scheduler.shutdown(wait=False)
        self._scheduler = None

    async def _on_fire(self, name: str) -> None:
        current = asyncio.current_task()
        assert current is not None
        self._running.add(current)
        try:
            occurrence = occurrence_at(self._triggers[name], utc_now())
            previous = previous_occurrence(self._triggers[name], occurrence)
            await self.execute(name, occurrence, previous)
        finally:
            self._running.discard(current)

    async def execute(
        self, name: str, occurrence: datetime, previous: datetime | None
    ) -> CronExecution:
        """Run one execution of name's occurrence and record it in the ledger."""
        execution = await asyncio.to_thread(self._begin, name, occurrence)
        context = CronContext(
            task=name,
            occurrence=occurrence,
            previous_occurrence=previous,
            instance=self.instance,
            settings=self._settings,
            engine=self._engine,
            wake_webhooks=self._wake_webhooks,
        )
        outcome, error = "ok", None
        try:
            await self._tasks[name].task(context)
        except Exception as exc:
            outcome = "error"
            error = "".join(traceback.format_exception_only(exc)).strip()
            log.exception("cron %s at %s failed", name, iso(occurrence))
        else:
            log.info("cron %s at %s done", name, iso(occurrence))
        return await asyncio.to_thread(self._finish, execution, outcome, error)

    def _begin(self, name: str, occurrence: datetime) -> CronExecution:
        # Written before the task runs, so an execution cut short by a crash
        # still shows in the ledger (with no outcome).
        with self._sessions.begin() as session:
            execution = CronExecution(
                task=name,
                occurrence=occurrence,
                instance=self.instance,
                pid=os.getpid(),
                host=socket.gethostname(),
                started_at=utc_now(),
            )
            session.add(execution)
        return execution

    def _finish(
        self, execution: CronExecution, outcome: str, error: str | None
    ) -> CronExecution:
        finished = utc_now()
        with self._sessions.begin() as session:
            session.execute(
                update(CronExecution)
                .where(CronExecution.id == execution.id)
                .values(finished_at=finished, outcome=outcome, error=error)
            )
        execution.finished_at = finished
        execution.outcome = outcome
        execution.error = error
        return execution
