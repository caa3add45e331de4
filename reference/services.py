"""The primary services (cron and the webhook runner) on a running loop.

Today every instance runs them inside its HTTP server's lifespan; a cluster
primary runs them without serving HTTP. Both go through these two functions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import Engine

from reference.config import Duties, Settings
from reference.cron import CronService
from reference.cron_tasks import TASKS
from reference.webhooks import WebhookRunner

log = logging.getLogger(__name__)


@dataclass
class Services:
    cron: CronService | None = None
    webhooks: WebhookRunner | None = None

    def wake_webhooks(self) -> None:
        if self.webhooks is not None:
            self.webhooks.wake()


async def start_services(
    settings: Settings, duties: Duties, engine: Engine
) -> Services:
    """Start what duties ask for on the running event loop."""
    services = Services()
    if duties.delivers_webhooks:
        services.webhooks = WebhookRunner(
            engine,
            settings.webhooks,
            settings.instance.id,
            all_origins=duties.delivers_all_events,
        )
        await services.webhooks.start()
        scope = "every instance" if duties.delivers_all_events else "this instance"
        log.info("webhook runner started, delivering events of %s", scope)
    if duties.runs_cron:
        services.cron = CronService(
            engine, settings, TASKS, wake_webhooks=services.wake_webhooks
        )
        await services.cron.start()
    return services


async def stop_services(services: Services, deadline: float | None = None) -> None:
    """Stop cron first (its running executions may still raise events).

    With deadline (a time.monotonic() value), running executions and
    deliveries get until then to finish; without, each its own default.
    """
    if services.cron is not None:
        await services.cron.stop(*_time_left(deadline))
        log.info("cron stopped")
    if services.webhooks is not None:
        await services.webhooks.stop(*_time_left(deadline))
        log.info("webhook runner stopped")


def _time_left(deadline: float | None) -> tuple[float, ...]:
    """() without a deadline, so the callee's default timeout applies."""
    if deadline is None:
        return ()
    return (max(deadline - time.monotonic(), 0.0),)
