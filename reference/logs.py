"""One log line per lifecycle event, naming the role, instance and pid."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(role)s %(instance)s pid %(process)d: %(message)s"


class _Who(logging.Filter):
    def __init__(self, role: str, instance: str) -> None:
        super().__init__()
        self.role = role
        self.instance = instance

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        record.instance = self.instance
        return True


_who = _Who("instance", "-")


def setup_logging(role: str, instance: str, level: int = logging.INFO) -> None:
    """Send every logger's records to stderr as
    "<time> <role> <instance id> pid <pid>: <message>".
    """
    set_role(role, instance)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_who)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-job chatter of APScheduler and every alembic step are not lifecycle
    # events; our own lines say what ran.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def set_role(role: str, instance: str) -> None:
    """Change the role in later lines, e.g. "worker 3" after a fork."""
    _who.role = role
    _who.instance = instance
