"""Tables of the reference server. Every time is stored as naive UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

URL_MAX_LENGTH = 2048  # the url columns of subscriptions and deliveries


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database.

    Naive storage behaves the same on SQLite (no time zones) and PostgreSQL.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}; pass an aware UTC time")
        # datetime(...) drops freezegun's FakeDatetime subclass, which some
        # drivers do not know how to adapt.
        utc = value.astimezone(UTC)
        return datetime(*utc.timetuple()[:6], utc.microsecond)

    def process_result_value(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utc_now() -> datetime:
    """Now on the (possibly pinned) wall clock, aware UTC."""
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a Z, as every ledger and payload shows times."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Article(Base):
    __tablename__ = "articles"
    # Ids are never reused after a delete (see migration 0001).
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text, default="")
    publish_at: Mapped[datetime | None] = mapped_column(index=True)
    published_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "body": self.body,
            "publish_at": iso(self.publish_at),
            "published_at": iso(self.published_at),
            "version": self.version,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


class WebhookSubscription(Base):
    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(URL_MAX_LENGTH))
    events: Mapped[list[str]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "events": list(self.events),
            "enabled": self.enabled,
        }


class Event(Base):
    """The outbox: one row per content change, written with the change."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    event: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    entry_id: Mapped[int]
    entry_version: Mapped[int]
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    origin: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(String(255), index=True)
    # When the claim was taken or last renewed; a claim older than the lease
    # belongs to a process presumed dead (see webhooks.py).
    claimed_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    # When the runner gave up (a subscription failed every attempt): final,
    # so the event is not claimed again once its lease runs out.
    failed_at: Mapped[datetime | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event": self.event,
            "model": self.model,
            "entry_id": self.entry_id,
            "entry_version": self.entry_version,
            "payload": self.payload,
            "origin": self.origin,
            "created_at": iso(self.created_at),
            "claimed_by": self.claimed_by,
            "claimed_at": iso(self.claimed_at),
            "delivered_at": iso(self.delivered_at),
            "failed_at": iso(self.failed_at),
        }


class Delivery(Base):
    """One HTTP attempt to carry an event to a subscriber."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    subscription_id: Mapped[int]
    url: Mapped[str] = mapped_column(String(URL_MAX_LENGTH))
    webhook_id: Mapped[str] = mapped_column(String(255))
    attempt: Mapped[int]
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    instance: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_id": self.event_id,
            "subscription_id": self.subscription_id,
            "url": self.url,
            "webhook_id": self.webhook_id,
            "attempt": self.attempt,
            "status_code": self.status_code,
            "error": self.error,
            "instance": self.instance,
            "pid": self.pid,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
        }


class CronExecution(Base):
    """One run of one occurrence of a cron task by some process."""

    __tablename__ = "cron_executions"

    id: Mapped[int] = mapped_column(primary_key=True)
    task: Mapped[str] = mapped_column(String(255))
    occurrence: Mapped[datetime]
    instance: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    host: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "occurrence": iso(self.occurrence),
            "instance": self.instance,
            "pid": self.pid,
            "host": self.host,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "outcome": self.outcome,
            "error": self.error,
        }


class MigrationRun(Base):
    """One execution of one migration revision by some process."""

    __tablename__ = "migration_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    revision: Mapped[str] = mapped_column(String(64))
    instance: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    host: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "revision": self.revision,
            "instance": self.instance,
            "pid": self.pid,
            "host": self.host,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
        }
