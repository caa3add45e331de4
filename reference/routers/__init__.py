"""Routers of the HTTP app, and what they share."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from sqlalchemy.orm import Session


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def wake_webhooks(request: Request) -> None:
    """Tell this process's webhook runner that an event was just committed."""
    request.app.state.services.wake_webhooks()


def no_nul(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; refuse it as bad input, not a 500.
    if value is not None and "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    return value
