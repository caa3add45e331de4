"""The cron tasks of the CMS, declared as a mapping like Strapi's cron config."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, update

from reference.cron import CronContext, CronTask
from reference.db import session_factory
from reference.mail import send_async, task_message
from reference.models import Article, utc_now
from reference.webhooks import record_event


async def daily_digest(context: CronContext) -> None:
    """Mail the editors the articles published since the previous digest."""
    titles = await asyncio.to_thread(
        published_titles,
        context.engine,
        context.previous_occurrence,
        context.occurrence,
    )
    lines = [f"- {title}" for title in titles] or ["Nothing was published."]
    message = task_message(
        context.settings.mail,
        task=context.task,
        occurrence=context.occurrence,
        instance=context.instance,
        subject=f"Daily digest for {context.occurrence:%Y-%m-%d}",
        body="\n".join(lines) + "\n",
    )
    await send_async(context.settings.mail, message)


async def publish_scheduled(context: CronContext) -> None:
    """Publish the articles scheduled for this occurrence's window, and
    overdue ones never published."""
    published = await asyncio.to_thread(
        publish_window,
        context.engine,
        context.previous_occurrence,
        context.occurrence,
        context.instance,
    )
    if published:
        context.wake_webhooks()


def published_titles(
    engine: Engine, after: datetime | None, until: datetime
) -> list[str]:
    query = select(Article.title).where(Article.published_at <= until)
    if after is not None:
        query = query.where(Article.published_at > after)
    with session_factory(engine)() as session:
        return list(session.scalars(query.order_by(Article.id)))


def publish_window(
    engine: Engine, after: datetime | None, until: datetime, origin: str
) -> list[dict[str, Any]]:
    """Publish the articles due at until; raise entry.publish for each.

    Due: publish_at in (after, until], or at or before after and never
    published (created with publish_at already past, no window held it).

    Inside the window, the window decides, not the articles' state: there is
    deliberately no "published_at IS NULL" condition there, so the effect is
    a function of the occurrence alone. One execution per occurrence
    publishes each article once; two instances executing the same
    occurrence both publish it and both raise entry.publish: the duplicate
    this project reproduces. An overdue article needs the condition, or
    every occurrence would publish it again. One UPDATE ... RETURNING keeps
    the write and the events it raises in one transaction.
    """
    due = Article.publish_at <= until
    if after is not None:
        due = due & ((Article.publish_at > after) | Article.published_at.is_(None))
    with session_factory(engine).begin() as session:
        articles = session.scalars(
            update(Article)
            .where(due)
            .values(published_at=until, updated_at=utc_now())
            .returning(Article)
        ).all()
        entries = [article.to_dict() for article in sorted(articles, key=_by_id)]
        for entry in entries:
            record_event(session, "entry.publish", entry, origin)
    return entries


def _by_id(article: Article) -> int:
    return article.id


TASKS: dict[str, CronTask] = {
    "daily-digest": CronTask(task=daily_digest, rule="0 9 * * *", tz="UTC"),
    "publish-scheduled": CronTask(task=publish_scheduled, rule="* * * * *", tz="UTC"),
}
