"""Liveness and readiness for load balancers and the harness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from reference.migrate import current_revision

router = APIRouter(prefix="/_health", tags=["health"])


@router.get("/live")
def live() -> dict[str, str]:
    return {"status": "live"}


@router.get("/ready")
def ready(request: Request) -> JSONResponse:
    """200 when the database answers and its schema is at head, else 503."""
    head = request.app.state.head_revision
    try:
        current = current_revision(request.app.state.engine)
    except Exception as exc:
        return JSONResponse(
            {
                "status": "unready",
                "reason": f"database unreachable: {type(exc).__name__}",
            },
            status_code=503,
        )
    if current != head:
        return JSONResponse(
            {"status": "unready", "reason": f"schema at {current}, head is {head}"},
            status_code=503,
        )
    return JSONResponse({"status": "ready", "revision": current})
