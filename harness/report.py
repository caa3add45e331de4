"""The run report: index.html for people, junit.xml for CI gates.

Both are written from the result dicts the runner also saves as result.json,
so a report can be rebuilt later from the files alone.
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).resolve().parent / "templates"

# Verdicts the runner writes; anything else is shown as a failure.
GOOD_VERDICTS = {"held", "reproduced"}


def write_run_report(run_dir: Path, results: list[dict[str, Any]], title: str) -> Path:
    """Render run_dir/index.html: one self-contained page, no scripts, no fetches.

    Links to logs and ledgers are relative, to `<scenario>/<file>` inside
    run_dir, so the folder can be moved or archived whole.
    """
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["show"] = _show
    page = environment.get_template("index.html.j2").render(
        title=title,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        scenarios=[scenario_view(result) for result in results],
    )
    path = Path(run_dir) / "index.html"
    _write_atomically(path, page.encode("utf-8"))
    return path


def write_junit(path: Path, results: list[dict[str, Any]]) -> Path:
    """One testsuite per scenario, one testcase per claim.

    A claim that did not hold is a <failure> with the expected and observed
    figures; a scenario the harness could not run is an <error>.
    """
    suites = ET.Element("testsuites", name="clusterproof")
    for result in results:
        scenario = str(result.get("scenario", "?"))
        suite = ET.SubElement(suites, "testsuite", name=scenario)
        claims = result.get("claims") or []
        failures = errors = 0
        error = result.get("error")
        if error:
            errors += 1
            case = ET.SubElement(
                suite, "testcase", classname=f"clusterproof.{scenario}", name="run"
            )
            message = f"stopped at stage {error.get('stage')}: {error.get('message')}"
            ET.SubElement(
                case, "error", message=message, type="HarnessError"
            ).text = message
        for claim in claims:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"clusterproof.{scenario}",
                name=str(claim.get("name")),
            )
            if not claim.get("held"):
                failures += 1
                message = (
                    f"expected {claim.get('expected')}, "
                    f"observed {claim.get('observed')}"
                )
                ET.SubElement(
                    case, "failure", message=message, type="ClaimNotHeld"
                ).text = message
        suite.set("tests", str(len(claims) + (1 if error else 0)))
        suite.set("failures", str(failures))
        suite.set("errors", str(errors))
    ET.indent(suites)
    body = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    _write_atomically(Path(path), body + b"\n")
    return Path(path)


def scenario_view(result: dict[str, Any]) -> dict[str, Any]:
    """What the template shows for one result, with every optional part filled."""
    scenario = str(result.get("scenario", "?"))
    folder = str(result.get("folder") or scenario)
    details = result.get("details") or {}
    claims = result.get("claims") or []
    instances = [
        {
            **{key: instance.get(key) for key in _INSTANCE_COLUMNS},
            "log_href": _href(folder, instance.get("log")),
        }
        for instance in result.get("instances") or []
    ]
    verdict = str(result.get("verdict", "error" if result.get("error") else "?"))
    return {
        "scenario": scenario,
        "anchor": "scenario-" + quote(scenario, safe=""),
        "verdict": verdict,
        "tone": _tone(verdict, result),
        "description": result.get("description") or "",
        "error": result.get("error"),
        "totals": {key: result.get(key) for key in _TOTALS},
        "claims": claims,
        "claims_held": sum(1 for claim in claims if claim.get("held")),
        "fire_latency": result.get("fire_latency_p95_ms") or {},
        "measures": {
            key: _measure(value)
            for key, value in (result.get("measures") or {}).items()
        },
        "variants": result.get("variants") or [],
        "mismatches": result.get("mismatches") or [],
        "occurrences": details.get("occurrences") or [],
        "events": details.get("events") or [],
        "migrations": details.get("migrations") or [],
        "instances": instances,
        "files": [
            {"name": name, "href": _href(folder, name)}
            for name in result.get("files") or []
        ],
        "load": _load_view(result.get("load")),
    }


def _load_view(load: dict[str, Any] | None) -> dict[str, Any] | None:
    """A load run's environment, tables and plots; None for other runs."""
    if not load:
        return None
    # matplotlib is loaded only when a report has load results to draw.
    from harness.load.plots import render

    return {
        "environment": load.get("environment") or {},
        "setups": load.get("setups") or [],
        "peers": load.get("peers") or [],
        "roles": load.get("roles") or {},
        "plots": render(load),
    }


_TOTALS = (
    "occurrences",
    "executions",
    "duplicates",
    "lost",
    "emails",
    "webhooks",
    "migration_runs",
)
_INSTANCE_COLUMNS = (
    "id",
    "pid",
    "port",
    "exit_code",
    "error",
    "ready_seconds",
    "cpu_seconds",
    "peak_cpu_percent",
    "peak_rss_mb",
    "log",
)


def _show(value: Any) -> Any:
    """A missing figure as '-' rather than the word None."""
    return "-" if value is None else value


def _measure(value: Any) -> Any:
    """[0.05, 0.061] -> '0.05, 0.061'; a float to three decimals."""
    if isinstance(value, list):
        return ", ".join(str(_measure(item)) for item in value) or "-"
    if isinstance(value, float):
        return round(value, 3)
    return _show(value)


def _tone(verdict: str, result: dict[str, Any]) -> str:
    if result.get("error") or verdict == "error":
        return "error"
    return "good" if verdict in GOOD_VERDICTS else "bad"


def _href(folder: str, name: Any) -> str | None:
    """A link relative to index.html; None for anything that would leave the
    run folder (absolute paths, '..'), which is then shown as text only."""
    if not name:
        return None
    relative = PurePosixPath(folder, str(name))
    if relative.is_absolute() or ".." in relative.parts:
        return None
    return quote(str(relative))


def _write_atomically(path: Path, body: bytes) -> None:
    # A reader (a browser refreshing, CI collecting artefacts) sees either the
    # old file or the new one, never half of it.
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(body)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
