"""The pinned clock: every instance of a run starts with one shared fake wall
clock, set a few seconds before a fire time, while monotonic time stays real.

A run has a single anchor, the real time at which the pinned instant holds.
Every process computes its wall clock as ``pin + (real now - anchor)``, so two
instances launched a second apart still agree to the millisecond, and the
harness can translate any real timestamp (a sink's arrival time) into the
pinned timeline by adding one offset.
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

PinMethod = Literal["in-process", "libfaketime"]

# Debian's libfaketime package; the multiarch folder differs per architecture.
_LIBFAKETIME_GLOB = "/usr/lib/*/faketime/libfaketime.so.1"


class ClockError(Exception):
    pass


def parse_instant(text: str) -> datetime:
    """'2026-01-01T08:59:50Z' -> an aware UTC datetime."""
    try:
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ClockError(
            f"an instant must be ISO 8601 like 2026-01-01T08:59:50Z, got {text!r}"
        ) from None
    if instant.tzinfo is None:
        raise ClockError(f"an instant needs a time zone (add Z), got {text!r}")
    return instant.astimezone(UTC)


def format_instant(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def find_libfaketime() -> str:
    found = sorted(glob.glob(_LIBFAKETIME_GLOB))
    if not found:
        raise ClockError(
            "libfaketime is not installed; install it with "
            "'apt-get install libfaketime' or pin the target in-process"
        )
    return found[0]


@dataclass(frozen=True)
class PinnedClock:
    pin: datetime
    anchor: float = field(default_factory=time.time)

    @property
    def offset(self) -> float:
        """Seconds to add to a real unix time to get the pinned one."""
        return self.pin.timestamp() - self.anchor

    def now(self) -> datetime:
        return datetime.fromtimestamp(time.time() + self.offset, UTC)

    def to_pinned(self, real: datetime) -> datetime:
        return real + timedelta(seconds=self.offset)

    def seconds_until(self, instant: datetime) -> float:
        return (instant - self.now()).total_seconds()

    def env(self, method: PinMethod) -> dict[str, str]:
        """Environment that starts a process on this clock."""
        if method == "in-process":
            return {
                "CLUSTERPROOF_CLOCK__PIN": format_instant(self.pin),
                "CLUSTERPROOF_CLOCK__ANCHOR": repr(self.anchor),
            }
        # libfaketime's "@" form starts the clock at the given instant when the
        # process starts and lets it tick, so the instant is computed per launch.
        started = self.now().strftime("%Y-%m-%d %H:%M:%S")
        return {
            "LD_PRELOAD": find_libfaketime(),
            "FAKETIME": f"@{started}",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "TZ": "UTC",
        }
