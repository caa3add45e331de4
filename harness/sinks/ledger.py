"""Ledger files written by the sinks: one JSON object per line."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def utc_now_iso() -> str:
    """The real wall clock as ISO 8601 UTC with millisecond precision and a Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_pid(value: str | None) -> int | str | None:
    """A pid header as a number, or as sent when it is not one."""
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() else value


class LedgerWriter:
    """Appends rows to a ledger file; safe to call from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: Any = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def append(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"
        with self._lock:
            # Flushed per row so a crash of the harness still leaves every row
            # that arrived before it on disk.
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_ledger(path: Path | str) -> list[dict[str, Any]]:
    """Rows of a ledger file; a missing file is an empty ledger.

    A last line cut short (the writer was killed mid-write) is skipped; a bad
    line anywhere else means the file is not a ledger and raises ValueError.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise ValueError(
                f"ledger {path} line {number} is not JSON ({error.msg}); "
                "was it written by a sink?"
            ) from error
    return rows
