"""Content API: articles, with an outbox event for every change."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from reference.models import Article, utc_now
from reference.routers import get_session, no_nul, wake_webhooks
from reference.webhooks import record_event

MAX_PAGE_SIZE = 100
MAX_ID = 2**31 - 1

router = APIRouter(prefix="/api/articles", tags=["content"])

Title = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(no_nul)]
Body = Annotated[str, Field(max_length=100_000), AfterValidator(no_nul)]
ArticleId = Annotated[int, Path(ge=1, le=MAX_ID)]
SessionDep = Annotated[Session, Depends(get_session)]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("publish_at is out of range") from None


class ArticleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title
    body: Body = ""
    publish_at: datetime | None = None

    _publish_at_utc = field_validator("publish_at")(_utc)


class ArticlePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    body: Body | None = None
    publish_at: datetime | None = None

    _publish_at_utc = field_validator("publish_at")(_utc)

    @field_validator("title", "body")
    @classmethod
    def _not_null(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("must be a string, not null")
        return value


@router.get("")
def list_articles(
    session: SessionDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 25,
    title: Annotated[str | None, Query(max_length=255)] = None,
    published: bool | None = None,
) -> dict[str, Any]:
    """Articles by id, a page at a time; title filters by substring."""
    conditions = []
    if title:
        if "\x00" in title:
            raise HTTPException(422, "title must not contain NUL characters")
        conditions.append(Article.title.icontains(title, autoescape=True))
    if published is not None:
        state = Article.published_at.is_not(None)
        conditions.append(state if published else ~state)

    total = session.scalar(select(func.count(Article.id)).where(*conditions)) or 0
    articles = session.scalars(
        select(Article)
        .where(*conditions)
        .order_by(Article.id)
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    return {
        "data": [article.to_dict() for article in articles],
        "meta": {
            "page": page,
            "page_size": page_size,
            "page_count": -(-total // page_size),
            "total": total,
        },
    }


@router.get("/{article_id}")
def read_article(article_id: ArticleId, session: SessionDep) -> dict[str, Any]:
    article = session.get(Article, article_id)
    if article is None:
        raise _not_found(article_id)
    return article.to_dict()


@router.post("", status_code=201)
def create_article(
    data: ArticleIn, request: Request, session: SessionDep
) -> dict[str, Any]:
    now = utc_now()
    with session.begin():
        article = Article(
            **data.model_dump(), version=1, created_at=now, updated_at=now
        )
        session.add(article)
        session.flush()
        entry = article.to_dict()
        record_event(session, "entry.create", entry, request.app.state.instance)
    wake_webhooks(request)
    return entry


@router.put("/{article_id}")
def replace_article(
    article_id: ArticleId, data: ArticleIn, request: Request, session: SessionDep
) -> dict[str, Any]:
    return _update(session, request, article_id, data.model_dump())


@router.patch("/{article_id}")
def patch_article(
    article_id: ArticleId, data: ArticlePatch, request: Request, session: SessionDep
) -> dict[str, Any]:
    return _update(session, request, article_id, data.model_dump(exclude_unset=True))


@router.delete("/{article_id}", status_code=204)
def delete_article(
    article_id: ArticleId, request: Request, session: SessionDep
) -> Response:
    with session.begin():
        article = session.scalars(
            delete(Article).where(Article.id == article_id).returning(Article)
        ).first()
        if article is None:
            raise _not_found(article_id)
        record_event(
            session, "entry.delete", article.to_dict(), request.app.state.instance
        )
    wake_webhooks(request)
    return Response(status_code=204)


def _update(
    session: Session, request: Request, article_id: int, changes: dict[str, Any]
) -> dict[str, Any]:
    # One UPDATE ... RETURNING bumps the version, so concurrent updates each
    # get their own version and the event names the version it describes.
    with session.begin():
        article = session.scalars(
            update(Article)
            .where(Article.id == article_id)
            .values(**changes, version=Article.version + 1, updated_at=utc_now())
            .returning(Article)
        ).first()
        if article is None:
            raise _not_found(article_id)
        entry = article.to_dict()
        record_event(session, "entry.update", entry, request.app.state.instance)
    wake_webhooks(request)
    return entry


def _not_found(article_id: int) -> HTTPException:
    return HTTPException(404, f"article {article_id} does not exist")
