"""The load report: plots drawn as inline SVG, checked in headless Chromium
with no network; the page holds no script and fetches nothing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.load import figures
from harness.load.command import setups_table
from harness.report import write_run_report
from tests.harness.test_load_thresholds import point, sweep

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PLOTS = {"plot-throughput", "plot-latency", "plot-balance", "plot-cpu"}

# Appended to a copy of the page (the report itself has no script): measures
# each plot as laid out, and lists every resource the page loaded.
MEASURE = """
<script>
const plots = [...document.querySelectorAll("figure.plot")].map((figure) => {
  const svg = figure.querySelector("svg");
  const box = svg ? svg.getBoundingClientRect() : { width: 0, height: 0 };
  const drawn = svg
    ? [...svg.querySelectorAll("path")].filter((p) => {
        const b = p.getBBox();
        return b.width > 0 || b.height > 0;
      }).length
    : 0;
  return { id: figure.id, width: box.width, height: box.height, drawn };
});
const fetched = performance.getEntriesByType("resource").map((e) => e.name);
const out = document.createElement("pre");
out.id = "measured";
out.textContent = JSON.stringify({ plots, fetched });
document.body.appendChild(out);
</script>
"""


def load_result() -> dict[str, Any]:
    points = sweep() + [
        point("cluster-3", "cluster", 3, 650.0,
              per_worker={"301": 200, "302": 230, "303": 220}),
    ]  # fmt: skip
    setups = figures.by_setup(points)
    peers = figures.peer_rows(setups)
    return {
        "scenario": "load-sweep",
        "description": "a sweep",
        "verdict": "held",
        "claims": [],
        "load": {
            "environment": {"cpus_available": 2, "cpus_logical": 2,
                            "cpu_model": "test CPU", "memory_gb": 4,
                            "platform": "Linux", "python": "3.11",
                            "packages": {"locust": "2.47.0"},
                            "database": "SQLite 3 (WAL)",
                            "generator_host": "same host"},
            "setups": setups,
            "peers": peers,
            "points": points,
            "roles": {"available": False, "reason": "server.role is unknown"},
        },
    }  # fmt: skip


def measured(page: Path, tmp_path: Path) -> dict[str, Any]:
    assert shutil.which("chromium"), (
        "install Debian's chromium: apt-get install chromium"
    )
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    dom = subprocess.run(
        ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}",
         "--window-size=1200,900", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=90, check=True,
    ).stdout  # fmt: skip
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert found, "the measuring script did not run"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_every_plot_renders_in_headless_chromium(tmp_path: Path) -> None:
    page = write_run_report(tmp_path / "run", [load_result()], title="load")
    figures_seen = measured(page, tmp_path)
    plots = {plot["id"]: plot for plot in figures_seen["plots"]}
    assert set(plots) == PLOTS
    for plot in plots.values():
        assert plot["width"] > 300 and plot["height"] > 100, plot
        # Axes, ticks, lines and glyphs: a blank or broken SVG has few paths.
        assert plot["drawn"] > 20, plot
    assert [url for url in figures_seen["fetched"] if not url.startswith("file:")] == []


def test_report_is_self_contained_and_shows_the_comparison(tmp_path: Path) -> None:
    html = write_run_report(tmp_path / "run", [load_result()], "load").read_text()
    assert "<script" not in html
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)
    assert "gunicorn-2" in html and "peer p95 ms" in html
    assert "not measured: server.role is unknown" in html
    assert "test CPU" in html and "SQLite 3 (WAL)" in html


def test_roles_table_shows_idle_figures_where_measured(tmp_path: Path) -> None:
    result = load_result()
    result["load"]["roles"] = {
        "available": True,
        "points": [
            point("content-api", "roles", -1, 190.0),
            point("full+1-content-api", "roles", 1, 300.0),
        ],
        # Only instances measured alone at rest have idle figures.
        "idle": {"content-api": {"seconds": 3.0, "cpu_seconds": 0.04, "rss_mb": 91.5}},
    }
    html = write_run_report(tmp_path / "run", [result], "load").read_text()
    rows = re.findall(r"<tr>\s*<td>([\w+-]+)</td>(.*?)</tr>", html, re.S)
    number = r'<td class="num">([^<]*)</td>'
    cells = {name: re.findall(number, row) for name, row in rows}
    assert cells["content-api"][:3] == ["0.04", "91.5", "190.0"]
    assert cells["full+1-content-api"][:3] == ["-", "-", "300.0"]


def test_the_terminal_table_fits_80_columns() -> None:
    result = load_result()
    console = Console(width=80, record=True)
    console.print(setups_table(result))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text  # rich cuts a cell short with an ellipsis
    for row in result["load"]["setups"]:
        assert f"{row['setup']} " in text
        assert f"{row['rps']:.0f}" in text
