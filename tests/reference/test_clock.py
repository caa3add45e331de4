from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reference.clock import apply_clock, pinned_start
from reference.config import ClockSettings
from tests.reference.support import wait_for

PIN = datetime(2026, 1, 1, 8, 59, 55, tzinfo=UTC)


def test_a_later_process_starts_later_on_the_pinned_clock() -> None:
    assert pinned_start(PIN, anchor=100.0, now=102.5) == PIN + timedelta(seconds=2.5)
    assert pinned_start(PIN, anchor=None, now=102.5) == PIN


def test_pinned_clock_ticks_and_keeps_monotonic_real() -> None:
    assert apply_clock(ClockSettings()) is None
    freezer = apply_clock(ClockSettings(pin=PIN, anchor=time.time()))
    assert freezer is not None
    try:
        start = datetime.now(UTC)
        assert abs(start - PIN) < timedelta(seconds=1)
        monotonic = time.monotonic()
        time.sleep(0.05)
        assert datetime.now(UTC) > start
        assert time.monotonic() > monotonic
    finally:
        freezer.stop()
    assert abs(datetime.now(UTC) - PIN) > timedelta(seconds=1)  # real again


@pytest.mark.postgres
def test_pinned_server_on_postgresql_imports_psycopg_cleanly(
    postgres_url: str, tmp_path: Path
) -> None:
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "reference", "--port", "0"],
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "DATABASE_URL": postgres_url,
                "CLUSTERPROOF_CLOCK__PIN": "2026-01-01T08:59:54Z",
            },
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        wait_for(
            lambda: "Application startup complete" in log_path.read_text(),
            timeout=30,
        )
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    text = log_path.read_text()
    assert "migrations at head" in text  # it did use PostgreSQL
    assert "RuntimeWarning" not in text, text
