from __future__ import annotations

import json
import smtplib
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from harness.sinks import HttpSink, SinkError, SmtpSink, read_ledger

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port someone else is listening on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def digest(occurrence: str = "2026-01-01T09:00:00Z") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "cms@example.test"
    message["To"] = "editors@example.test"
    message["Subject"] = "Daily digest"
    message["Message-ID"] = "<digest-1@example.test>"
    message["X-Clusterproof-Task"] = "daily-digest"
    message["X-Clusterproof-Occurrence"] = occurrence
    message["X-Clusterproof-Instance"] = "a"
    message["X-Clusterproof-Pid"] = "4121"
    message.set_content("3 articles published")
    return message


def signed_post(
    url: str, body: dict, webhook_id: str, secret: str = SECRET
) -> httpx.Response:
    # Signed at a pinned instant far from now, as a pinned-clock instance does.
    signed_at = datetime(2026, 1, 1, 9, 0, 1, tzinfo=UTC)
    data = json.dumps(body).encode()
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(signed_at.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, signed_at, data),
        "x-clusterproof-instance": "b",
        "x-clusterproof-pid": "4188",
    }
    return httpx.post(f"{url}/hooks", content=data, headers=headers, timeout=5)


PUBLISH = {
    "event": "entry.publish",
    "model": "article",
    "created_at": "2026-01-01T09:00:00Z",
    "entry": {"id": 7, "title": "Hello", "version": 2},
}


def test_smtp_sink_records_a_real_email(tmp_path: Path) -> None:
    ledger = tmp_path / "smtp.jsonl"
    with SmtpSink(ledger) as sink:
        assert sink.port > 0
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=5) as client:
            client.send_message(digest())
        rows = read_ledger(ledger)

    assert len(rows) == 1
    row = rows[0]
    assert row["task"] == "daily-digest"
    assert row["occurrence"] == "2026-01-01T09:00:00Z"
    assert row["instance"] == "a"
    assert row["pid"] == 4121
    assert row["message_id"] == "<digest-1@example.test>"
    assert row["to"] == ["editors@example.test"]
    assert row["subject"] == "Daily digest"
    assert row["received_at"].endswith("Z")


def test_smtp_sink_appends_one_line_per_email(tmp_path: Path) -> None:
    ledger = tmp_path / "smtp.jsonl"
    with SmtpSink(ledger) as sink:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=5) as client:
            client.send_message(digest("2026-01-01T09:00:00Z"))
            client.send_message(digest("2026-01-01T10:00:00Z"))

    lines = ledger.read_text().splitlines()
    assert [json.loads(line)["occurrence"][11:16] for line in lines] == [
        "09:00",
        "10:00",
    ]


def test_smtp_sink_reports_a_taken_port(tmp_path: Path, taken_port: int) -> None:
    sink = SmtpSink(tmp_path / "smtp.jsonl", port=taken_port)
    message = (
        f"smtp sink: port {taken_port} on 127.0.0.1 is in use; "
        "free it or choose another port"
    )
    with pytest.raises(SinkError, match=message):
        sink.start()
    sink.stop()


def test_http_sink_reports_a_taken_port(tmp_path: Path, taken_port: int) -> None:
    sink = HttpSink(tmp_path / "http.jsonl", port=taken_port)
    with pytest.raises(SinkError, match=f"http sink: port {taken_port} .* in use"):
        sink.start()
    sink.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "example.test", "::"])
def test_sinks_refuse_non_loopback_hosts(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValueError, match="smtp sink: host must be a loopback"):
        SmtpSink(tmp_path / "smtp.jsonl", host=host)
    with pytest.raises(ValueError, match="http sink: host must be a loopback"):
        HttpSink(tmp_path / "http.jsonl", host=host)


def test_http_sink_records_a_signed_delivery(tmp_path: Path) -> None:
    ledger = tmp_path / "http.jsonl"
    with HttpSink(ledger, secret=SECRET) as sink:
        response = signed_post(sink.url, PUBLISH, "msg_1")
        rows = read_ledger(ledger)

    assert response.status_code == 200
    assert len(rows) == 1
    row = rows[0]
    assert row["signature_valid"] is True
    assert row["webhook_id"] == "msg_1"
    assert (row["event"], row["model"], row["entry_id"], row["entry_version"]) == (
        "entry.publish",
        "article",
        7,
        2,
    )
    assert (row["instance"], row["pid"], row["status"]) == ("b", 4188, 200)
    assert row["webhook_timestamp"] == "1767258001"


def test_http_sink_marks_a_bad_signature_invalid(tmp_path: Path) -> None:
    ledger = tmp_path / "http.jsonl"
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
    with HttpSink(ledger, secret=SECRET) as sink:
        signed_post(sink.url, PUBLISH, "msg_1", secret=other)
        httpx.post(f"{sink.url}/hooks", json=PUBLISH, timeout=5)

    assert [row["signature_valid"] for row in read_ledger(ledger)] == [False, False]


def test_http_sink_without_secret_does_not_judge_signatures(tmp_path: Path) -> None:
    ledger = tmp_path / "http.jsonl"
    with HttpSink(ledger) as sink:
        signed_post(sink.url, PUBLISH, "msg_1")

    assert read_ledger(ledger)[0]["signature_valid"] is None


def test_http_sink_rejects_a_malformed_secret(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="http sink: secret must be"):
        HttpSink(tmp_path / "http.jsonl", secret="whsec_")


def test_http_sink_fails_the_first_attempts_of_each_delivery(tmp_path: Path) -> None:
    ledger = tmp_path / "http.jsonl"
    with HttpSink(ledger, secret=SECRET, fail_first=2) as sink:
        first = [signed_post(sink.url, PUBLISH, "msg_1").status_code for _ in range(3)]
        second = signed_post(sink.url, PUBLISH, "msg_2").status_code

    assert first == [500, 500, 200]
    assert second == 500
    rows = read_ledger(ledger)
    assert [(row["webhook_id"], row["status"]) for row in rows] == [
        ("msg_1", 500),
        ("msg_1", 500),
        ("msg_1", 200),
        ("msg_2", 500),
    ]


def test_sink_can_restart_on_the_port_it_used(tmp_path: Path) -> None:
    ledger = tmp_path / "smtp.jsonl"
    with SmtpSink(ledger) as sink:
        port = sink.port
    with SmtpSink(ledger, port=port) as again:
        with smtplib.SMTP("127.0.0.1", again.port, timeout=5) as client:
            client.send_message(digest())
    assert len(read_ledger(ledger)) == 1


def test_read_ledger_skips_a_last_line_cut_short(tmp_path: Path) -> None:
    ledger = tmp_path / "http.jsonl"
    ledger.write_text('{"webhook_id": "a"}\n{"webhook_id": "b"}\n{"webhook_i')
    assert read_ledger(ledger) == [{"webhook_id": "a"}, {"webhook_id": "b"}]


def test_read_ledger_refuses_a_broken_line_in_the_middle(tmp_path: Path) -> None:
    ledger = tmp_path / "http.jsonl"
    ledger.write_text('{"webhook_id": "a"}\nnot json\n{"webhook_id": "b"}\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_ledger(ledger)


def test_read_ledger_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_ledger(tmp_path / "absent.jsonl") == []
