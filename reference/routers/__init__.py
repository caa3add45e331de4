"""Routers of the HTTP app, and what they share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

# Bounds of a 422 body: the input that failed can be any size, and a field
# name or a message may quote it.
MAX_ERRORS = 10
MAX_LOC_TEXT = 80
MAX_MESSAGE = 300


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


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """A 422 naming where each problem is and what it is, without the input.

    The input is not echoed: it may be NaN or infinity (which JSON cannot
    carry), hold lone surrogates (which UTF-8 cannot) or be megabytes long.
    """
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    detail: dict[str, Any] = {
        "detail": [
            {
                "type": error["type"],
                "loc": [_loc_part(part) for part in error["loc"]],
                "msg": _bounded(str(error["msg"]), MAX_MESSAGE),
            }
            for error in errors[:MAX_ERRORS]
        ]
    }
    if len(errors) > MAX_ERRORS:
        detail["errors_left_off"] = len(errors) - MAX_ERRORS
    return JSONResponse(detail, status_code=422)


def _bounded(text: str, limit: int) -> str:
    """text cut to limit characters, with lone surrogates written as escapes
    (backslash, u, four hex digits), so it fits a small UTF-8 JSON body.

    _bounded("abcdef", 3) -> "abc..."
    """
    cut = text[:limit] + ("..." if len(text) > limit else "")
    return cut.encode("utf-8", "backslashreplace").decode("utf-8")


def _loc_part(part: object) -> int | str:
    # An unknown field's name comes from the client and is as unsafe as a
    # value; positions and our field names are ints and short strings.
    if isinstance(part, int):
        return part
    return _bounded(str(part), MAX_LOC_TEXT)
