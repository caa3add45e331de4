"""The pinned clock: every instance of a run shares one fake wall clock.

The harness picks an instant (clock.pin) a few seconds before a fire time and
the real unix time it refers to (clock.anchor). A process started later starts
its wall clock that much later than the pin, so instances started at
different moments still agree. The clock ticks at real speed; monotonic time
stays real so asyncio's timers are untouched.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from freezegun import freeze_time
from freezegun.api import _freeze_time

from reference.config import ClockSettings


def pinned_start(pin: datetime, anchor: float | None, now: float) -> datetime:
    """Wall-clock instant this process starts at, for a pin made at anchor.

    pinned_start(09:00:00, anchor=100.0, now=102.5) -> 09:00:02.5
    """
    elapsed = 0.0 if anchor is None else now - anchor
    return pin + timedelta(seconds=elapsed)


def apply_clock(clock: ClockSettings) -> _freeze_time | None:
    """Start the pinned clock if clock.pin is set; returns the running freezer.

    Call it before the app, the scheduler or the database engine exist: they
    keep references to datetime and time functions taken when they are built.
    """
    if clock.pin is None:
        return None

    # A compiled module using datetime's C API checks, when it is imported,
    # that datetime.date and datetime.datetime have the size its C header
    # says. freezegun swaps them for bigger Python subclasses, so such a
    # module imported after the pin warns "datetime.date size changed".
    # psycopg's is one, and SQLAlchemy imports it only on the first
    # PostgreSQL engine: import it now, while datetime is still itself.
    import psycopg  # noqa: F401

    freezer = freeze_time(
        pinned_start(clock.pin, clock.anchor, time.time()),
        tick=True,
        real_asyncio=True,
    )
    freezer.start()
    return freezer
