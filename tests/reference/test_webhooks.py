from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select
from standardwebhooks.webhooks import Webhook

from reference.config import WebhookSettings
from reference.db import session_factory
from reference.models import Delivery, Event, WebhookSubscription, utc_now
from reference.webhooks import WebhookRunner, backoff_delay, record_event, webhook_id
from tests.reference.support import Receiver

SECRET = "whsec_" + base64.b64encode(b"clusterproof-test-secret").decode()
ENTRY = {"id": 7, "title": "t", "version": 3}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(fail_first=2) as receiver:
        yield receiver


def _subscribe(engine: Engine, url: str, events: list[str]) -> int:
    with session_factory(engine).begin() as session:
        subscription = WebhookSubscription(
            url=url, events=events, enabled=True, created_at=utc_now()
        )
        session.add(subscription)
        session.flush()
        return subscription.id


def _raise(engine: Engine, name: str, origin: str) -> int:
    with session_factory(engine).begin() as session:
        event = record_event(session, name, ENTRY, origin)
        session.flush()
        return event.id


def _runner(engine: Engine, instance: str, all_origins: bool) -> WebhookRunner:
    settings = WebhookSettings(secret=SECRET, max_attempts=3, backoff_seconds=0.01)
    return WebhookRunner(engine, settings, instance, all_origins=all_origins)


async def _run_until(runner: WebhookRunner, done: object, timeout: float = 5) -> None:
    await runner.start()
    runner.wake()
    try:
        for _ in range(int(timeout / 0.02)):
            if done():  # type: ignore[operator]
                return
            await asyncio.sleep(0.02)
    finally:
        await runner.stop()


def test_signed_delivery_retries_with_the_same_webhook_id(
    engine: Engine, receiver: Receiver
) -> None:
    subscription = _subscribe(engine, receiver.url, ["entry.publish"])
    _subscribe(engine, receiver.url + "/other", ["entry.delete"])
    event = _raise(engine, "entry.publish", "test-a")
    runner = _runner(engine, "test-a", all_origins=False)

    asyncio.run(_run_until(runner, lambda: len(receiver.requests) >= 3))

    assert len(receiver.requests) == 3
    ids = {headers["webhook-id"] for headers, _ in receiver.requests}
    assert ids == {webhook_id(event, subscription)}
    for headers, body in receiver.requests:
        payload = Webhook(SECRET).verify(body, headers)
        assert payload["event"] == "entry.publish" and payload["entry"] == ENTRY
        assert headers["x-clusterproof-instance"] == "test-a"
    with session_factory(engine)() as session:
        attempts = session.scalars(select(Delivery).order_by(Delivery.id)).all()
        stored = session.get(Event, event)
    assert [(a.attempt, a.status_code) for a in attempts] == [
        (1, 503),
        (2, 503),
        (3, 204),
    ]
    assert attempts[0].error == "http status 503" and attempts[2].error is None
    assert stored is not None and stored.claimed_by == "test-a"
    assert stored.delivered_at is not None


def test_giving_up_leaves_the_event_undelivered(engine: Engine) -> None:
    with Receiver(fail_first=10) as receiver:
        _subscribe(engine, receiver.url, ["entry.create"])
        event = _raise(engine, "entry.create", "test-a")
        runner = _runner(engine, "test-a", all_origins=False)
        asyncio.run(_run_until(runner, lambda: len(receiver.requests) >= 3))
    with session_factory(engine)() as session:
        stored = session.get(Event, event)
        attempts = session.scalars(select(Delivery.attempt)).all()
    assert attempts == [1, 2, 3]
    assert stored is not None and stored.delivered_at is None


def test_an_event_is_claimed_once(engine: Engine) -> None:
    mine = _raise(engine, "entry.update", "a")
    theirs = _raise(engine, "entry.update", "b")

    async def race() -> list[int]:
        # No start(): only the concurrent claim_pending calls compete.
        runners = [_runner(engine, name, all_origins=True) for name in "xyz"]
        try:
            return list(
                await asyncio.gather(*(runner.claim_pending() for runner in runners))
            )
        finally:
            for runner in runners:
                await runner.stop()

    assert sum(asyncio.run(race())) == 2
    with session_factory(engine)() as session:
        claims = session.scalars(select(Event.claimed_by).order_by(Event.id)).all()
    assert len(claims) == 2 and all(claims) and (mine, theirs) == (1, 2)


def test_todays_runner_only_takes_its_own_events(engine: Engine) -> None:
    _raise(engine, "entry.update", "a")
    _raise(engine, "entry.update", "b")

    async def claim() -> int:
        runner = _runner(engine, "a", all_origins=False)
        try:
            return await runner.claim_pending()
        finally:
            await runner.stop()

    assert asyncio.run(claim()) == 1
    with session_factory(engine)() as session:
        claims = session.execute(select(Event.origin, Event.claimed_by)).all()
    assert sorted(claims) == [("a", "a"), ("b", None)]


def test_backoff_doubles() -> None:
    assert [backoff_delay(0.5, n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
