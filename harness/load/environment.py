"""The machine and software a load run measured, shown beside its figures:
a throughput means little without the CPUs and versions behind it."""

from __future__ import annotations

import os
import platform
import sqlite3
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

from harness.database import postgres_url
from reference.cpus import available_cpus

PACKAGES = (
    "clusterproof",
    "locust",
    "uvicorn",
    "gunicorn",
    "fastapi",
    "starlette",
    "sqlalchemy",
    "psutil",
)


def describe(database: str | None) -> dict[str, Any]:
    return {
        "cpus_available": available_cpus(),
        "cpus_logical": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "database": _database(database),
        "generator_host": "same host as the server",
    }


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _database(server: str | None) -> str:
    if server is None:
        return f"SQLite {sqlite3.sqlite_version} (WAL), a fresh file per point"
    engine = sa.create_engine(postgres_url(server))
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("show server_version")).scalar()
    finally:
        engine.dispose()
    return f"PostgreSQL {version}, a fresh database per point"
