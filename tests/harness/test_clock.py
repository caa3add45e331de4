from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from harness.clock import ClockError, PinnedClock, format_instant, parse_instant

PIN = datetime(2026, 1, 1, 8, 59, 50, tzinfo=UTC)


def test_parse_instant_round_trips() -> None:
    assert (
        format_instant(parse_instant("2026-01-01T08:59:50Z")) == "2026-01-01T08:59:50Z"
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [("tomorrow", "must be ISO 8601"), ("2026-01-01T08:59:50", "needs a time zone")],
)
def test_parse_instant_rejects(text: str, match: str) -> None:
    with pytest.raises(ClockError, match=match):
        parse_instant(text)


def test_pinned_clock_ticks_from_the_pin() -> None:
    clock = PinnedClock(PIN, anchor=time.time() - 2.0)
    assert 1.9 < (clock.now() - PIN).total_seconds() < 3.0
    assert clock.seconds_until(PIN) < -1.9


def test_in_process_env_carries_pin_and_anchor() -> None:
    clock = PinnedClock(PIN, anchor=1000.5)
    assert clock.env("in-process") == {
        "CLUSTERPROOF_CLOCK__PIN": "2026-01-01T08:59:50Z",
        "CLUSTERPROOF_CLOCK__ANCHOR": "1000.5",
    }


def test_libfaketime_pins_a_foreign_process() -> None:
    """A process we do not control reads the pinned wall clock, while its
    monotonic clock stays real."""
    clock = PinnedClock(PIN)
    probe = "import time; print(time.time(), time.monotonic())"
    before = time.monotonic()
    output = subprocess.run(
        [sys.executable, "-c", probe],
        env={**clock.env("libfaketime")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    wall, monotonic = float(output[0]), float(output[1])
    assert abs(wall - PIN.timestamp()) < 5
    assert abs(monotonic - before) < 5
