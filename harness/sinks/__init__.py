"""Capture servers that record what the target sends out: emails and webhooks."""

from __future__ import annotations

from harness.sinks.http import HttpSink
from harness.sinks.ledger import read_ledger
from harness.sinks.listen import SinkError
from harness.sinks.smtp import SmtpSink

__all__ = ["HttpSink", "SinkError", "SmtpSink", "read_ledger"]
