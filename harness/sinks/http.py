"""HTTP sink: receives webhook deliveries on loopback and records each attempt."""

from __future__ import annotations

import hmac
import json
import threading
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook

from harness.sinks.ledger import LedgerWriter, parse_pid, utc_now_iso
from harness.sinks.listen import SinkError, bind_error, loopback_family

SINK = "http sink"


def signature_matches(webhook: Webhook, headers: Any, body: bytes) -> bool:
    """Whether the webhook-signature header signs this body, id and timestamp.

    Webhook.verify() also rejects timestamps more than five minutes from now,
    but senders run on a pinned clock, so only the signature is checked here.
    """
    webhook_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (webhook_id and timestamp and signatures):
        return False
    try:
        signed_at = datetime.fromtimestamp(int(timestamp), UTC)
    except (ValueError, OverflowError, OSError):
        return False
    expected = webhook.sign(webhook_id, signed_at, body).encode()
    return any(hmac.compare_digest(expected, s.encode()) for s in signatures.split())


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = self.server.sink.record(self.path, self.headers, body)
        reply = b"ok\n" if status == 200 else b"failing on purpose to test retries\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        # The ledger is the record; request lines on stderr would only be noise.
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sink: HttpSink) -> None:
        self.sink = sink
        # Instance attribute read by TCPServer.__init__ when it makes the socket.
        self.address_family = loopback_family(SINK, sink.host)
        super().__init__((sink.host, sink.port), _Handler)

    def server_bind(self) -> None:
        try:
            super().server_bind()
        except OSError as error:
            raise bind_error(SINK, self.sink.host, self.sink.port, error) from error


class HttpSink:
    """Records every webhook POST, one JSON line each in `ledger_path`.

    With `secret` ("whsec_..."), each row says whether the Standard Webhooks
    signature is valid. With `fail_first=n`, the first n attempts of each
    webhook-id get a 500, so the sender's retries can be observed.
    """

    def __init__(
        self,
        ledger_path: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        secret: str | None = None,
        fail_first: int = 0,
    ) -> None:
        loopback_family(SINK, host)
        if fail_first < 0:
            raise ValueError(f"{SINK}: fail_first must be 0 or more, got {fail_first}")
        self.ledger_path = Path(ledger_path)
        self.host = host
        self.port = port
        self.fail_first = fail_first
        self._webhook = _webhook_for(secret)
        self._ledger = LedgerWriter(self.ledger_path)
        self._attempts: Counter[str | None] = Counter()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        if self._server is not None:
            raise SinkError(f"{SINK}: already started on port {self.port}")
        self._server = _Server(self)
        self.port = self._server.server_address[1]
        self._ledger.open()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"http-sink-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._ledger.close()

    def record(self, path: str, headers: Any, body: bytes) -> int:
        """Append one attempt to the ledger and return the status to answer."""
        webhook_id = headers.get("webhook-id")
        with self._lock:
            self._attempts[webhook_id] += 1
            attempt = self._attempts[webhook_id]
        status = 500 if attempt <= self.fail_first else 200

        payload = _payload(body)
        entry = payload.get("entry")
        entry = entry if isinstance(entry, dict) else {}
        valid = None
        if self._webhook is not None:
            valid = signature_matches(self._webhook, headers, body)

        self._ledger.append(
            {
                "received_at": utc_now_iso(),
                "path": path,
                "webhook_id": webhook_id,
                "webhook_timestamp": headers.get("webhook-timestamp"),
                "signature_valid": valid,
                "event": payload.get("event"),
                "model": payload.get("model"),
                "entry_id": entry.get("id"),
                "entry_version": entry.get("version"),
                "instance": headers.get("x-clusterproof-instance"),
                "pid": parse_pid(headers.get("x-clusterproof-pid")),
                "status": status,
            }
        )
        return status

    def __enter__(self) -> HttpSink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _webhook_for(secret: str | None) -> Webhook | None:
    if secret is None:
        return None
    try:
        return Webhook(secret)
    except Exception as error:
        # The secret itself stays out of the message: messages end up in logs.
        raise ValueError(
            f"{SINK}: secret must be a Standard Webhooks secret like "
            f"'whsec_<base64>' ({error})"
        ) from error


def _payload(body: bytes) -> dict[str, Any]:
    # A body that is not a JSON object is still recorded, with empty fields,
    # so a malformed delivery shows up in the report instead of vanishing.
    try:
        payload = json.loads(body)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}
