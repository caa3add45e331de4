from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from harness.checker import Expected, Ledgers, check, summary
from harness.claims import evaluate
from harness.report import write_junit, write_run_report

NINE = "2026-01-01T09:00:00Z"


def sample_result() -> dict[str, Any]:
    """A run where two instances both mailed the 09:00 digest."""
    ledgers = Ledgers(
        emails=[
            {"task": "daily-digest", "occurrence": NINE, "instance": "a", "pid": 11,
             "received_at": "2026-01-01T09:00:00.100Z"},
            {"task": "daily-digest", "occurrence": NINE, "instance": "b", "pid": 22,
             "received_at": "2026-01-01T09:00:00.200Z"},
        ],
        cron_executions=[
            {"task": "daily-digest", "occurrence": NINE, "instance": "a", "pid": 11,
             "started_at": "2026-01-01T09:00:00.010Z",
             "finished_at": "2026-01-01T09:00:00.090Z", "outcome": "ok"},
            {"task": "daily-digest", "occurrence": NINE, "instance": "b", "pid": 22,
             "started_at": "2026-01-01T09:00:00.020Z",
             "finished_at": "2026-01-01T09:00:00.150Z", "outcome": "ok"},
        ],
        migration_runs=[{"revision": "0001_initial", "instance": "a", "pid": 11}],
    )  # fmt: skip
    expected = Expected(
        occurrences=[("daily-digest", NINE)], mail_tasks={"daily-digest"}
    )
    outcome = check(ledgers, expected)
    claims = [
        evaluate("emails_per_occurrence[daily-digest] == 1", outcome.metrics,
                 name="digest mailed once per occurrence"),
        evaluate("max_migration_runs_per_revision == 1", outcome.metrics),
    ]  # fmt: skip
    return {
        "scenario": "two-hosts-<naive>",
        "description": "two instances & one database",
        "verdict": "failed",
        **summary(outcome),
        "instances": [
            {"id": "a", "pid": 11, "port": 4001, "exit_code": 0, "error": None,
             "peak_cpu_percent": 12.5, "peak_rss_mb": 80.2,
             "log": "instances/a.log"},
            {"id": "b", "pid": 22, "port": 4002, "exit_code": 0, "error": None,
             "peak_cpu_percent": 11.0, "peak_rss_mb": 79.9,
             "log": "instances/b.log"},
        ],
        "claims": [claim.as_dict() for claim in claims],
        "details": outcome.details(),
        "files": ["instances/a.log", "smtp.jsonl", "../../etc/passwd"],
    }  # fmt: skip


def error_result() -> dict[str, Any]:
    return {
        "scenario": "broken",
        "verdict": "error",
        "error": {"stage": "start instances", "message": "port 4001 is in use"},
        "instances": [],
        "claims": [],
    }


class Page(HTMLParser):
    """Collects text, links and external references of a rendered page."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.links: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.links.append(values["href"] or "")
        if tag in {"script", "link", "img", "iframe"}:
            self.external.append(tag)

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(" ".join(data.split()))


def render(tmp_path: Path, results: list[dict[str, Any]]) -> tuple[str, Page]:
    path = write_run_report(tmp_path, results, title="clusterproof reproduce")
    html = path.read_text()
    page = Page()
    page.feed(html)
    return html, page


def test_report_shows_the_duplicate_and_the_failed_claim(tmp_path: Path) -> None:
    html, page = render(tmp_path, [sample_result()])
    text = "\n".join(page.text)

    assert "digest mailed once per occurrence" in text
    assert "emails_per_occurrence[daily-digest] == 1" in text
    assert "emails_per_occurrence[daily-digest] = [2]" in text
    assert "not held" in text
    assert "duplicated +1" in text
    assert 'class="bad">duplicated +1' in html
    # Which instance and pid ran the occurrence, and when.
    assert 'a (pid 11) <span class="mono">2026-01-01T09:00:00.010Z' in html
    assert 'b (pid 22) <span class="mono">2026-01-01T09:00:00.020Z' in html
    assert "0001_initial" in text


def test_report_escapes_and_links_relative_files(tmp_path: Path) -> None:
    html, page = render(tmp_path, [sample_result()])

    assert "two-hosts-&lt;naive&gt;" in html
    assert "<naive>" not in html
    assert "two-hosts-%3Cnaive%3E/instances/a.log" in page.links
    assert "two-hosts-%3Cnaive%3E/smtp.jsonl" in page.links
    # A path leaving the run folder is shown, never linked.
    assert not any("passwd" in link for link in page.links)
    assert "../../etc/passwd" in page.text
    assert page.external == []
    assert "http://" not in html and "https://" not in html


def test_report_names_the_stage_a_broken_scenario_stopped_at(tmp_path: Path) -> None:
    _, page = render(tmp_path, [sample_result(), error_result()])

    assert "stopped at stage start instances: port 4001 is in use" in page.text
    assert "no claim was evaluated." in page.text


def test_report_replaces_the_previous_one_whole(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("old")
    path = write_run_report(tmp_path, [error_result()], title="again")

    assert "again" in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]


def test_junit_has_a_failure_per_claim_not_held(tmp_path: Path) -> None:
    path = write_junit(tmp_path / "junit.xml", [sample_result(), error_result()])

    root = ET.parse(path).getroot()
    suites = {suite.get("name"): suite for suite in root.iter("testsuite")}
    naive = suites["two-hosts-<naive>"]
    assert (naive.get("tests"), naive.get("failures"), naive.get("errors")) == (
        "2",
        "1",
        "0",
    )
    cases = {case.get("name"): case for case in naive.iter("testcase")}
    failure = cases["digest mailed once per occurrence"].find("failure")
    assert failure is not None
    assert failure.get("message") == (
        "expected emails_per_occurrence[daily-digest] == 1, "
        "observed emails_per_occurrence[daily-digest] = [2]"
    )
    assert cases["max_migration_runs_per_revision == 1"].find("failure") is None

    broken = suites["broken"]
    assert broken.get("errors") == "1"
    error = broken.find("testcase/error")
    assert error is not None
    assert (
        error.get("message") == "stopped at stage start instances: port 4001 is in use"
    )
