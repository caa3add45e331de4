from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select, update
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


def _runner(
    engine: Engine, instance: str, all_origins: bool, lease: float = 30.0
) -> WebhookRunner:
    settings = WebhookSettings(
        secret=SECRET, max_attempts=3, backoff_seconds=0.01, claim_lease_seconds=lease
    )
    return WebhookRunner(engine, settings, instance, all_origins=all_origins)


def _set_claim(
    engine: Engine, event_id: int, owner: str, age: float, **more: object
) -> None:
    with session_factory(engine).begin() as session:
        session.execute(
            update(Event)
            .where(Event.id == event_id)
            .values(
                claimed_by=owner,
                claimed_at=utc_now() - timedelta(seconds=age),
                **more,
            )
        )


def _event(engine: Engine, event_id: int) -> Event:
    with session_factory(engine)() as session:
        event = session.get(Event, event_id)
    assert event is not None
    return event


@pytest.fixture
def silent_subscriber() -> Iterator[str]:
    """The URL of a server that accepts connections and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"


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
    assert stored.failed_at is not None

    async def claim_after_the_lease() -> int:
        runner = _runner(engine, "b", all_origins=True, lease=0.01)
        await asyncio.sleep(0.05)
        try:
            return await runner.claim_pending()
        finally:
            await runner.stop()

    assert asyncio.run(claim_after_the_lease()) == 0  # giving up is final


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


def test_a_lapsed_claim_is_claimed_again(engine: Engine) -> None:
    with Receiver() as receiver:
        _subscribe(engine, receiver.url, ["entry.update"])
        lapsed = _raise(engine, "entry.update", "dead")
        fresh = _raise(engine, "entry.update", "alive")
        given_up = _raise(engine, "entry.update", "dead")
        _set_claim(engine, lapsed, "dead", age=31)
        _set_claim(engine, fresh, "alive", age=1)
        _set_claim(engine, given_up, "dead", age=31, failed_at=utc_now())
        runner = _runner(engine, "b", all_origins=True)

        asyncio.run(_run_until(runner, lambda: _event(engine, lapsed).delivered_at))

    assert [h["webhook-id"] for h, _ in receiver.requests] == [webhook_id(lapsed, 1)]
    assert _event(engine, lapsed).claimed_by == "b"
    assert _event(engine, fresh).claimed_by == "alive"
    assert _event(engine, given_up).claimed_by == "dead"


def test_a_claim_held_while_delivering_is_released_on_stop(
    engine: Engine, silent_subscriber: str
) -> None:
    """Runner a renews its claim while its delivery hangs, so b cannot take
    the event even after several leases; a stops, releasing the claim, and
    b delivers the event at once."""
    subscription = _subscribe(engine, silent_subscriber, ["entry.create"])
    event = _raise(engine, "entry.create", "a")

    async def hang_then_stop() -> int:
        a = _runner(engine, "a", all_origins=False, lease=0.3)
        b = _runner(engine, "b", all_origins=True, lease=0.3)
        await a.start()
        a.wake()
        for _ in range(50):
            if _event(engine, event).claimed_by == "a":
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)  # more than three leases
        taken = await b.claim_pending()
        await a.stop(timeout=0.1)
        await b.stop()
        return taken

    assert asyncio.run(hang_then_stop()) == 0
    released = _event(engine, event)
    assert (released.claimed_by, released.claimed_at) == (None, None)
    assert released.delivered_at is None

    with Receiver() as receiver:
        with session_factory(engine).begin() as session:
            session.execute(
                update(WebhookSubscription)
                .where(WebhookSubscription.id == subscription)
                .values(url=receiver.url)
            )
        runner = _runner(engine, "b", all_origins=True)
        asyncio.run(_run_until(runner, lambda: _event(engine, event).delivered_at))

    assert [h["webhook-id"] for h, _ in receiver.requests] == [
        webhook_id(event, subscription)
    ]
    assert _event(engine, event).claimed_by == "b"


def test_a_new_claim_skips_subscriptions_already_served(engine: Engine) -> None:
    with Receiver() as receiver:
        served = _subscribe(engine, receiver.url + "/served", ["entry.delete"])
        pending = _subscribe(engine, receiver.url + "/pending", ["entry.delete"])
        event = _raise(engine, "entry.delete", "dead")
        _set_claim(engine, event, "dead", age=60)
        with session_factory(engine).begin() as session:
            for subscription, error in ((served, None), (pending, "http status 503")):
                session.add(
                    Delivery(
                        event_id=event,
                        subscription_id=subscription,
                        url=receiver.url,
                        webhook_id=webhook_id(event, subscription),
                        attempt=1,
                        status_code=204 if error is None else 503,
                        error=error,
                        instance="dead",
                        pid=1,
                        started_at=utc_now(),
                    )
                )
        runner = _runner(engine, "b", all_origins=True)
        asyncio.run(_run_until(runner, lambda: _event(engine, event).delivered_at))

    assert [h["webhook-id"] for h, _ in receiver.requests] == [
        webhook_id(event, pending)
    ]
    with session_factory(engine)() as session:
        attempts = session.execute(
            select(Delivery.subscription_id, Delivery.attempt, Delivery.instance)
        ).all()
    assert sorted(attempts) == [
        (served, 1, "dead"),
        (pending, 1, "dead"),
        (pending, 2, "b"),
    ]
