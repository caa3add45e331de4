from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from reference.clock import apply_clock, pinned_start
from reference.config import ClockSettings

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
