"""The HTTP app: content API, admin API, uploads, health."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reference.config import Duties, Settings
from reference.db import make_engine, session_factory
from reference.migrate import head_revision
from reference.routers import admin, content, health, uploads, validation_error
from reference.services import Services, start_services, stop_services


class ServingHeaders:
    """Names the serving instance and process on every response.

    Wraps the whole app, outside Starlette's error middleware, so a 500
    carries the headers too. The pid is read per response: the app may be
    built before the process that serves it is forked.
    """

    def __init__(self, app: ASGIApp, instance: str) -> None:
        self.app = app
        self.instance = instance.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-clusterproof-instance", self.instance),
                    (b"x-clusterproof-pid", str(os.getpid()).encode()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ReferenceApp(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        return ServingHeaders(super().build_middleware_stack(), self.state.instance)


def build_app(
    settings: Settings, duties: Duties, engine: Engine | None = None
) -> FastAPI:
    """The ASGI app for settings; its lifespan starts the services duties name.

    The engine connects lazily, so the app may be built before a fork.
    """
    engine = engine or make_engine(settings.database.url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services()
        if duties.runs_services:
            services = await start_services(settings, duties, engine)
        app.state.services = services
        try:
            yield
        finally:
            await stop_services(services)

    app = ReferenceApp(title="clusterproof reference", lifespan=lifespan)
    app.state.instance = settings.instance.id
    app.state.started_at = time.time()  # after the clock is pinned, if it is
    app.state.settings = settings
    app.state.duties = duties
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.head_revision = head_revision()
    app.state.services = Services()
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(content.router)
    if duties.serves_admin:
        app.include_router(admin.router)
        app.include_router(uploads.router)
    app.include_router(health.router)
    return app
