"""Admin API: webhook subscriptions and the ledgers, behind a bearer token."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from reference.cluster_state import ClusterStateUnavailable, cluster_status
from reference.models import (
    URL_MAX_LENGTH,
    Base,
    CronExecution,
    Delivery,
    Event,
    MigrationRun,
    WebhookSubscription,
    utc_now,
)
from reference.routers import get_session
from reference.webhooks import EVENT_NAMES

MAX_NAME_SHOWN = 40
_bearer = HTTPBearer(auto_error=False)


def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    token = request.app.state.settings.admin.token
    if token is None:
        raise _unauthorized("admin.token is unset; set CLUSTERPROOF_ADMIN__TOKEN")
    if credentials is None or not hmac.compare_digest(
        credentials.credentials.encode(), token.encode()
    ):
        raise _unauthorized("a valid 'Authorization: Bearer <admin.token>' is needed")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)]
)
SessionDep = Annotated[Session, Depends(get_session)]


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl
    events: list[str] = Field(min_length=1, max_length=len(EVENT_NAMES))
    enabled: bool = True

    @field_validator("url")
    @classmethod
    def _fits(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if len(str(url)) > URL_MAX_LENGTH:
            raise ValueError(f"url must be at most {URL_MAX_LENGTH} characters long")
        return url

    @field_validator("events")
    @classmethod
    def _known(cls, events: list[str]) -> list[str]:
        # Names cut short: a client can send a name of any length.
        unknown = sorted({name[:MAX_NAME_SHOWN] for name in events} - set(EVENT_NAMES))
        if unknown:
            raise ValueError(
                f"unknown events {unknown}; use some of {list(EVENT_NAMES)}"
            )
        return sorted(set(events), key=EVENT_NAMES.index)


@router.get("/webhooks")
def list_subscriptions(session: SessionDep) -> list[dict[str, Any]]:
    return _ledger(session, WebhookSubscription)


@router.post("/webhooks", status_code=201)
def create_subscription(data: SubscriptionIn, session: SessionDep) -> dict[str, Any]:
    with session.begin():
        subscription = WebhookSubscription(
            url=str(data.url),
            events=data.events,
            enabled=data.enabled,
            created_at=utc_now(),
        )
        session.add(subscription)
    return subscription.to_dict()


@router.delete("/webhooks/{subscription_id}", status_code=204)
def delete_subscription(
    subscription_id: Annotated[int, Path(ge=1, le=2**31 - 1)], session: SessionDep
) -> Response:
    with session.begin():
        gone = session.execute(
            delete(WebhookSubscription)
            .where(WebhookSubscription.id == subscription_id)
            .returning(WebhookSubscription.id)
        ).first()
    if gone is None:
        raise HTTPException(
            404, f"webhook subscription {subscription_id} does not exist"
        )
    return Response(status_code=204)


@router.get("/cluster")
def cluster(request: Request) -> dict[str, Any]:
    """The serving processes: this one alone, or the cluster's primary and
    workers as the primary last published them."""
    try:
        return cluster_status(request.app.state.started_at)
    except ClusterStateUnavailable as exc:
        raise HTTPException(503, str(exc)) from None


@router.get("/cron-executions")
def cron_executions(session: SessionDep) -> list[dict[str, Any]]:
    return _ledger(session, CronExecution)


@router.get("/migration-runs")
def migration_runs(session: SessionDep) -> list[dict[str, Any]]:
    return _ledger(session, MigrationRun)


@router.get("/deliveries")
def deliveries(session: SessionDep) -> list[dict[str, Any]]:
    return _ledger(session, Delivery)


@router.get("/events")
def events(session: SessionDep) -> list[dict[str, Any]]:
    return _ledger(session, Event)


def _ledger(session: Session, model: type[Base]) -> list[dict[str, Any]]:
    rows = session.scalars(select(model).order_by(model.id))  # type: ignore[attr-defined]
    return [row.to_dict() for row in rows]  # type: ignore[attr-defined]
