"""Webhooks: the outbox written with each content change, and its runner.

A content change and its event row commit in one transaction, so an event
exists exactly when the change does. The runner polls the outbox, claims an
event with a conditional UPDATE (only one process can turn claimed_by from
NULL to its own id), then delivers it to every matching subscription, retrying
with exponential backoff. Every attempt is a row in deliveries.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets
from typing import Any

import httpx
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from reference.config import WebhookSettings
from reference.db import session_factory
from reference.models import Delivery, Event, WebhookSubscription, iso, utc_now

EVENT_NAMES = ("entry.create", "entry.update", "entry.delete", "entry.publish")
POLL_INTERVAL = 0.2
REQUEST_TIMEOUT = 10.0
CLAIM_BATCH = 50

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
        self._deliveries: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(timeout=REQUEST_TIMEOUT)
        self._poller = asyncio.create_task(self._poll_forever())

    def wake(self) -> None:
        """Poll now: an event was just committed. Safe from any thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; give deliveries in flight timeout seconds to end."""
        self._stopping = True
        self._wake.set()
        if self._poller is not None:
            await self._poller
        if self._deliveries:
            _, late = await asyncio.wait(self._deliveries, timeout=timeout)
            for task in late:
                # Limitation: an event cancelled here stays claimed and is
                # never delivered; nothing reclaims events of a dead process.
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
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

    async def claim_pending(self) -> int:
        """Claim the pending events this runner may deliver and start them."""
        claimed = 0
        for event_id in await asyncio.to_thread(self._pending_ids):
            if self._stopping:
                break
            event = await asyncio.to_thread(self._claim, event_id)
            if event is None:
                continue  # another process claimed it first
            claimed += 1
            task = asyncio.create_task(self.deliver_event(event))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
        return claimed

    async def deliver_event(self, event: Event) -> None:
        subscriptions = await asyncio.to_thread(self._subscriptions_for, event.event)
        results = await asyncio.gather(
            *(self._deliver(event, sub) for sub in subscriptions)
        )
        if all(results):
            await asyncio.to_thread(self._mark_delivered, event.id)

    async def _deliver(self, event: Event, subscription: WebhookSubscription) -> bool:
        assert self._client is not None, "start() the runner first"
        message_id = webhook_id(event.id, subscription.id)
        body = json.dumps(event.payload, separators=(",", ":"))
        attempts = self._settings.max_attempts
        for attempt in range(1, attempts + 1):
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
            attempts,
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

    def _pending_ids(self) -> list[int]:
        query = select(Event.id).where(Event.claimed_by.is_(None))
        if not self.all_origins:
            query = query.where(Event.origin == self.instance)
        with self._sessions() as session:
            return list(session.scalars(query.order_by(Event.id).limit(CLAIM_BATCH)))

    def _claim(self, event_id: int) -> Event | None:
        with self._sessions.begin() as session:
            return session.scalars(
                update(Event)
                .where(Event.id == event_id, Event.claimed_by.is_(None))
                .values(claimed_by=self.instance)
                .returning(Event)
            ).first()

    def _subscriptions_for(self, name: str) -> list[WebhookSubscription]:
        with self._sessions() as session:
            enabled = session.scalars(
                select(WebhookSubscription)
                .where(WebhookSubscription.enabled.is_(True))
                .order_by(WebhookSubscription.id)
            )
            return [sub for sub in enabled if name in sub.events]

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


def _throwaway_secret() -> str:
    log.warning(
        "webhooks.secret is unset; signing with a random secret no subscriber "
        "can verify (set CLUSTERPROOF_WEBHOOKS__SECRET=whsec_...)"
    )
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
