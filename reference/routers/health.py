"""Liveness and readiness for load balancers and the harness."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from reference.migrate import current_revision

log = logging.getLogger(__name__)
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
        # The probe answers anyone, so the database's name stays in the log.
        log.warning("not ready: %s", exc)
        return JSONResponse(
            {"status": "unready", "reason": "database unreachable"}, status_code=503
        )
    if current != head:
        return JSONResponse(
            {"status": "unready", "reason": f"schema at {current}, head is {head}"},
            status_code=503,
        )
    return JSONResponse({"status": "ready", "revision": current})
