"""The real server in a subprocess: pinned clock, cron, webhooks, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from freezegun import freeze_time
from standardwebhooks.webhooks import Webhook

from harness.topology import free_port
from tests.reference.support import Inbox, Receiver, wait_for
from tests.reference.test_webhooks import SECRET

TOKEN = {"Authorization": "Bearer e2e"}


@pytest.mark.slow
def test_pinned_instance_runs_cron_and_delivers(
    tmp_path: Path, smtp_inbox: Inbox
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/cp.db",
        "CLUSTERPROOF_ADMIN__TOKEN": "e2e",
        "CLUSTERPROOF_MAIL__SMTP_PORT": str(smtp_inbox.port),  # type: ignore[attr-defined]
        "CLUSTERPROOF_WEBHOOKS__SECRET": SECRET,
        # Six seconds before the digest's 09:00 fire time.
        "CLUSTERPROOF_CLOCK__PIN": "2026-01-01T08:59:54Z",
        "CLUSTERPROOF_CLOCK__ANCHOR": str(time.time()),
    }
    command = [sys.executable, "-m", "reference", "--instance-id", "e2e"]
    server = subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with Receiver() as receiver:
            wait_for(lambda: _ready(base))
            httpx.post(
                f"{base}/admin/webhooks",
                json={"url": receiver.url, "events": ["entry.publish"]},
                headers=TOKEN,
            ).raise_for_status()
            article = httpx.post(
                f"{base}/api/articles",
                json={"title": "At nine", "publish_at": "2026-01-01T08:59:30Z"},
            ).json()

            wait_for(lambda: smtp_inbox.messages and receiver.requests, timeout=15)
            executions = httpx.get(f"{base}/admin/cron-executions", headers=TOKEN)

        message = smtp_inbox.messages[0]
        assert message["X-Clusterproof-Occurrence"] == "2026-01-01T09:00:00Z"
        assert message["X-Clusterproof-Instance"] == "e2e"
        assert message["X-Clusterproof-Pid"] == str(server.pid)
        headers, body = receiver.requests[0]
        # The signature is made on the pinned clock; verify it from then, so
        # the library's five-minute tolerance applies.
        with freeze_time("2026-01-01T09:00:05Z"):
            payload = Webhook(SECRET).verify(body, headers)
        assert headers["x-clusterproof-pid"] == str(server.pid)
        assert payload["event"] == "entry.publish"
        assert payload["entry"]["id"] == article["id"]
        assert payload["entry"]["published_at"] == "2026-01-01T09:00:00Z"
        nine = [
            (e["task"], e["outcome"])
            for e in executions.json()
            if e["occurrence"] == "2026-01-01T09:00:00Z"
        ]
        assert sorted(nine) == [("daily-digest", "ok"), ("publish-scheduled", "ok")]

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
        log = server.stderr.read() if server.stderr else ""
        assert " instance e2e pid " in log and "migrations at head (4 applied)" in log
        assert log.rstrip().endswith("stopped")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/_health/ready").status_code == 200
    except httpx.HTTPError:
        return False
