"""Cron: runs the tasks of cron_tasks.py on APScheduler, one ledger row each.

Every process that runs cron schedules every task, as a CMS does today; two
such processes both execute each occurrence. That duplicate is what this
project reproduces, so nothing here coordinates with other processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

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
        return CronTrigger.from_crontab(self.rule, timezone=ZoneInfo(self.tz))


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
