"""Webhooks: the outbox written with each content change, and its runner.

A content change and its event row commit in one transaction, so an event
exists exactly when the change does. The runner polls the outbox, claims an
event with a conditional UPDATE (only one process can turn claimed_by from
NULL to its own id), then delivers it to every matching subscription, retrying
with exponential backoff. Every attempt is a row in deliveries.

A claim is a lease: the runner renews claimed_at while it delivers, and any
runner may claim again an event whose claim has not been renewed for
webhooks.claim_lease_seconds, since its owner has most likely died. A runner
that stops releases the claims it could not finish, so the next one takes
them at once instead of after the lease.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import ColumnElement, Engine, and_, or_, select, update
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from reference.config import WebhookSettings
from reference.db import session_factory
from reference.models import Delivery, Event, WebhookSubscription, iso, utc_now

EVENT_NAMES = ("entry.create", "entry.update", "entry.delete", "entry.publish")
POLL_INTERVAL = 0.2
REQUEST_TIMEOUT = 10.0
CLAIM_BATCH = 50
# Claims are renewed this many times per lease, so one slow renewal does not
# let a claim lapse while its owner is alive.
RENEWALS_PER_LEASE = 3

log = logging.getLogger(__name__)


def record_event(
    session: Session, name: str, entry: dict[str, Any], origin: str
) -> Event:
    """Add an outbox event for entry to session; it commits with the change."""
    now = utc_now()
    event = Event(
        event=name,
        model="article",
        entry_id=entry["id"],
        entry_version=entry["version"],
        payload={
            "event": name,
            "model": "article",
            "created_at": iso(now),
            "entry": entry,
        },
        origin=origin,
        created_at=now,
    )
    session.add(event)
    return event


def webhook_id(event_id: int, subscription_id: int) -> str:
    """The id of one delivery, the same for each of its retries.

    webhook_id(7, 2) -> "msg_e7s2"
    """
    return f"msg_e{event_id}s{subscription_id}"


def backoff_delay(base: float, attempt: int) -> float:
    """Pause after a failed attempt: base, 2*base, 4*base, ..."""
    return base * 2 ** (attempt - 1)


def claimable(lapsed_before: datetime) -> ColumnElement[bool]:
    """Events a runner may claim: unfinished, and unclaimed or with a claim
    last renewed before lapsed_before."""
    return and_(
        Event.delivered_at.is_(None),
        Event.failed_at.is_(None),
        or_(Event.claimed_by.is_(None), Event.claimed_at < lapsed_before),
    )


class WebhookRunner:
    """Delivers outbox events on the running event loop.

    all_origins=False is today's runner, which lives in the memory of the
    process that raised the event: it only takes events whose origin is this
    instance. A cluster primary passes all_origins=True and delivers the events
    its workers raised too.
    """

    def __init__(
        self,
        engine: Engine,
        settings: WebhookSettings,
        instance: str,
        *,
        all_origins: bool,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.instance = instance
        self.all_origins = all_origins
        self._sessions = session_factory(engine)
        self._settings = settings
        self._poll_interval = poll_interval
        self._signer = Webhook(settings.secret or _throwaway_secret())
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        # Events claimed here whose delivery has not finished: renewed while
        # they run, released if the runner stops before they finish.
        self._held: set[int] = set()
        self._stopping = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(timeout=REQUEST_TIMEOUT)
        self._poller = asyncio.create_task(self._poll_forever())
        self._renewer = asyncio.create_task(self._renew_forever())

    def wake(self) -> None:
        """Poll now: an event was just committed. Safe from any thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; give deliveries in flight timeout seconds to end,
        then release the claims of the events they did not finish."""
        self._stopping = True
        self._wake.set()
        if self._poller is not None:
            await self._poller
        if self._deliveries:
            _, late = await asyncio.wait(self._deliveries, timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        if self._held:
            await self._release_held()
        if self._client is not None:
            await self._client.aclose()

    async def _poll_forever(self) -> None:
        while not self._stopping:
            try:
                await self.claim_pending()
            except Exception:
                log.exception("outbox poll failed; retrying")
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _renew_forever(self) -> None:
        period = self._settings.claim_lease_seconds / RENEWALS_PER_LEASE
        while True:
            await asyncio.sleep(period)
            if not self._held:
                continue
            try:
                await asyncio.to_thread(self._renew, sorted(self._held))
            except Exception:
                log.exception("renewing outbox claims failed; retrying")

    async def claim_pending(self) -> int:
        """Claim the pending events this runner may deliver and start them."""
        claimed = 0
        for event_id, owner in await asyncio.to_thread(self._pending):
            if self._stopping:
                break
            if event_id in self._held:
                continue  # ours, and our renewal is late: still delivering
            event = await asyncio.to_thread(self._claim, event_id)
            if event is None:
                continue  # another process claimed it first
            if owner is not None:
                log.info(
                    "claimed event %s again: the claim of %s lapsed", event_id, owner
                )
            claimed += 1
            self._held.add(event.id)
            task = asyncio.create_task(self.deliver_event(event))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
        return claimed

    async def deliver_event(self, event: Event) -> None:
        """Deliver to every subscription not yet served; record the outcome.

        A cancelled delivery keeps its claim (stop() releases it); one that
        failed on an error lets it lapse, so it is retried after the lease.
        """
        try:
            subscriptions, earlier = await asyncio.to_thread(self._still_to_do, event)
            results = await asyncio.gather(
                *(
                    self._deliver(event, sub, earlier.get(sub.id, 0))
                    for sub in subscriptions
                )
            )
            finish = self._mark_delivered if all(results) else self._mark_failed
            await asyncio.to_thread(finish, event.id)
        except Exception:
            log.exception(
                "delivering event %s failed; it is retried once its claim lapses",
                event.id,
            )
        self._held.discard(event.id)

    async def _deliver(
        self, event: Event, subscription: WebhookSubscription, earlier: int = 0
    ) -> bool:
        """Up to max_attempts attempts, numbered on from earlier ones (made
        under a claim that lapsed), so a webhook-id's attempts stay distinct."""
        assert self._client is not None, "start() the runner first"
        message_id = webhook_id(event.id, subscription.id)
        body = json.dumps(event.payload, separators=(",", ":"))
        attempts = earlier + self._settings.max_attempts
        for attempt in range(earlier + 1, attempts + 1):
            started = utc_now()
            status: int | None = None
            error: str | None = None
            try:
                response = await self._client.post(
                    subscription.url,
                    content=body,
                    headers=self._headers(message_id, body),
                )
                status = response.status_code
                if not response.is_success:
                    error = f"http status {status}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            await asyncio.to_thread(
                self._record_attempt,
                event,
                subscription,
                message_id,
                attempt,
                status,
                error,
                started,
            )
            if error is None:
                return True
            if attempt < attempts:
                await asyncio.sleep(
                    backoff_delay(self._settings.backoff_seconds, attempt)
                )
        log.warning(
            "gave up delivering event %s to %s after %d attempts: %s",
            event.id,
            subscription.url,
            attempts - earlier,
            error,
        )
        return False

    def _headers(self, message_id: str, body: str) -> dict[str, str]:
        # Signed on this process's wall clock, which may be pinned.
        now = utc_now()
        return {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(message_id, now, body),
            "x-clusterproof-instance": self.instance,
            "x-clusterproof-pid": str(os.getpid()),
        }

    def _lapsed_before(self) -> datetime:
        return utc_now() - timedelta(seconds=self._settings.claim_lease_seconds)

    def _pending(self) -> list[tuple[int, str | None]]:
        """(event id, current owner) of the events this runner may claim."""
        query = select(Event.id, Event.claimed_by).where(
            claimable(self._lapsed_before())
        )
        if not self.all_origins:
            query = query.where(Event.origin == self.instance)
        with self._sessions() as session:
            rows = session.execute(query.order_by(Event.id).limit(CLAIM_BATCH))
            return [(row.id, row.claimed_by) for row in rows]

    def _claim(self, event_id: int) -> Event | None:
        # The condition is checked again in the UPDATE itself: of two runners
        # racing for one event, the second matches no row.
        with self._sessions.begin() as session:
            return session.scalars(
                update(Event)
                .where(Event.id == event_id, claimable(self._lapsed_before()))
                .values(claimed_by=self.instance, claimed_at=utc_now())
                .returning(Event)
            ).first()

    def _renew(self, event_ids: list[int]) -> None:
        # Limitation: a runner stalled for longer than the lease (a frozen
        # VM, a long pause) may find its event claimed again by another
        # runner; both then deliver it, under the same webhook-id, which lets
        # the subscriber drop the second.
        with self._sessions.begin() as session:
            still_ours = set(
                session.scalars(
                    update(Event)
                    .where(Event.id.in_(event_ids), Event.claimed_by == self.instance)
                    .values(claimed_at=utc_now())
                    .returning(Event.id)
                )
            )
        for event_id in sorted(set(event_ids) - still_ours):
            log.warning(
                "event %s was claimed again by another runner while this one "
                "held it; webhooks.claim_lease_seconds may be too short",
                event_id,
            )

    async def _release_held(self) -> None:
        held = sorted(self._held)
        try:
            released = await asyncio.to_thread(self._release, held)
        except Exception:
            log.exception(
                "could not release the claims of events %s; they lapse after "
                "%g s instead",
                held,
                self._settings.claim_lease_seconds,
            )
            return
        self._held.clear()
        if released:
            log.info(
                "released %d undelivered event(s) for the next runner: %s",
                len(released),
                released,
            )

    def _release(self, event_ids: Iterable[int]) -> list[int]:
        with self._sessions.begin() as session:
            return sorted(
                session.scalars(
                    update(Event)
                    .where(
                        Event.id.in_(list(event_ids)),
                        Event.claimed_by == self.instance,
                        Event.delivered_at.is_(None),
                        Event.failed_at.is_(None),
                    )
                    .values(claimed_by=None, claimed_at=None)
                    .returning(Event.id)
                )
            )

    def _still_to_do(
        self, event: Event
    ) -> tuple[list[WebhookSubscription], dict[int, int]]:
        """Enabled subscriptions to event that no earlier claim delivered to,
        and how many attempts earlier claims made for each."""
        with self._sessions() as session:
            enabled = session.scalars(
                select(WebhookSubscription)
                .where(WebhookSubscription.enabled.is_(True))
                .order_by(WebhookSubscription.id)
            )
            matching = [sub for sub in enabled if event.event in sub.events]
            earlier = session.execute(
                select(Delivery.subscription_id, Delivery.error).where(
                    Delivery.event_id == event.id
                )
            ).all()
        attempts: dict[int, int] = {}
        delivered: set[int] = set()
        for subscription_id, error in earlier:
            attempts[subscription_id] = attempts.get(subscription_id, 0) + 1
            if error is None:
                delivered.add(subscription_id)
        return [sub for sub in matching if sub.id not in delivered], attempts

    def _record_attempt(
        self,
        event: Event,
        subscription: WebhookSubscription,
        message_id: str,
        attempt: int,
        status: int | None,
        error: str | None,
        started: Any,
    ) -> None:
        with self._sessions.begin() as session:
            session.add(
                Delivery(
                    event_id=event.id,
                    subscription_id=subscription.id,
                    url=subscription.url,
                    webhook_id=message_id,
                    attempt=attempt,
                    status_code=status,
                    error=error,
                    instance=self.instance,
                    pid=os.getpid(),
                    started_at=started,
                    finished_at=utc_now(),
                )
            )

    def _mark_delivered(self, event_id: int) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(Event).where(Event.id == event_id).values(delivered_at=utc_now())
            )

    def _mark_failed(self, event_id: int) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(Event).where(Event.id == event_id).values(failed_at=utc_now())
            )


def _throwaway_secret() -> str:
    log.warning(
        "webhooks.secret is unset; signing with a random secret no subscriber "
        "can verify (set CLUSTERPROOF_WEBHOOKS__SECRET=whsec_...)"
    )
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
