"""The report's plots, as inline SVG drawn by matplotlib from result.json's
load section: throughput and latency against workers, each worker's share
of requests, CPU per request. Text is drawn as paths, so a page shows the
same on a machine without the fonts and needs nothing from the network.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

COLOURS = {
    "cluster": "#1f5fbf",
    "cluster-off": "#6e6e73",
    "gunicorn": "#d9730d",
    "uvicorn": "#2f9e44",
    "roles": "#8e44ad",
}
SERIES = ("cluster", "gunicorn", "uvicorn")


def render(load: dict[str, Any]) -> list[dict[str, str]]:
    """[{"name", "title", "svg"}] for every plot the load section has data for."""
    setups = load.get("setups") or []
    if not setups:
        return []
    plots = [
        ("throughput", "Throughput against workers", _throughput),
        ("latency", "Latency percentiles against workers", _latency),
        ("balance", "Each worker's share of requests", _shares),
        ("cpu", "Server CPU per 1000 requests", _cpu),
    ]
    return [
        {"name": name, "title": title, "svg": _svg(name, draw, setups)}
        for name, title, draw in plots
    ]


def _svg(
    name: str, draw: Callable[[Figure, list[dict[str, Any]]], None], setups: Any
) -> str:
    figure = Figure(figsize=(7.2, 3.6), layout="constrained")
    draw(figure, setups)
    buffer = io.StringIO()
    # A salt per plot keeps the ids matplotlib gives clip paths and markers
    # distinct between the SVGs of one page, and stable between runs.
    with matplotlib.rc_context({"svg.hashsalt": name, "svg.fonttype": "path"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    # The XML prolog and doctype are for a standalone file, not for HTML.
    return text[text.index("<svg") :]


def _series(setups: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return sorted((s for s in setups if s["kind"] == kind), key=lambda s: s["workers"])


def _worker_axis(axes: Axes, setups: list[dict[str, Any]]) -> None:
    workers = sorted({s["workers"] for s in setups if s["kind"] in SERIES})
    if workers:
        axes.set_xticks(workers)
    axes.set_xlabel("workers")
    axes.grid(alpha=0.3)


def _throughput(figure: Figure, setups: list[dict[str, Any]]) -> None:
    axes = figure.subplots()
    for kind in SERIES:
        rows = _series(setups, kind)
        if not rows:
            continue
        axes.plot(
            [r["workers"] for r in rows],
            [r["rps"] for r in rows],
            marker="o",
            color=COLOURS[kind],
            label=kind,
        )
        # A point where Locust saturated measured Locust: ringed in red.
        hot = [r for r in rows if r["generator_saturated"]]
        axes.scatter(
            [r["workers"] for r in hot],
            [r["rps"] for r in hot],
            s=160,
            facecolors="none",
            edgecolors="red",
        )
    for row in setups:
        if row["kind"] == "cluster-off":
            axes.axhline(
                row["rps"], color=COLOURS["cluster-off"], linestyle="--", label="off"
            )
    axes.set_ylabel("requests per second")
    axes.set_ylim(bottom=0)
    _worker_axis(axes, setups)
    axes.legend(loc="lower right")


def _latency(figure: Figure, setups: list[dict[str, Any]]) -> None:
    panels = figure.subplots(1, 3, sharey=True)
    for axes, key in zip(panels, ("p50_ms", "p95_ms", "p99_ms"), strict=True):
        for kind in SERIES:
            rows = _series(setups, kind)
            if rows:
                axes.plot(
                    [r["workers"] for r in rows],
                    [r[key] for r in rows],
                    marker="o",
                    color=COLOURS[kind],
                    label=kind,
                )
        for row in setups:
            if row["kind"] == "cluster-off":
                axes.axhline(row[key], color=COLOURS["cluster-off"], linestyle="--")
        axes.set_title(key.removesuffix("_ms"))
        _worker_axis(axes, setups)
    # Once every panel is drawn: the shared scale must fit p99, not just p50.
    panels[0].set_ylim(bottom=0)
    panels[0].set_ylabel("ms")
    panels[0].legend(fontsize="small")


def _shares(figure: Figure, setups: list[dict[str, Any]]) -> None:
    axes = figure.subplots()
    rows = [s for s in setups if len(s.get("per_worker") or {}) > 1]
    if not rows:
        axes.text(0.5, 0.5, "no setup with more than one worker", ha="center")
        axes.set_axis_off()
        return
    for y, row in enumerate(rows):
        counts = list(row["per_worker"].values())
        total = sum(counts) or 1
        left = 0.0
        for number, count in enumerate(counts):
            share = 100 * count / total
            axes.barh(
                y,
                share,
                height=0.6,
                left=left,
                color=COLOURS.get(row["kind"], "#888"),
                alpha=0.45 + 0.55 * (number % 2),
                edgecolor="white",
            )
            axes.text(left + share / 2, y, f"{share:.0f}%", ha="center", va="center")
            left += share
    axes.set_yticks(range(len(rows)), [r["setup"] for r in rows])
    axes.set_xlim(0, 100)
    axes.set_xlabel("share of requests, % (one segment per worker; even is best)")


def _cpu(figure: Figure, setups: list[dict[str, Any]]) -> None:
    axes = figure.subplots()
    labels = [s["setup"] for s in setups]
    axes.bar(
        range(len(setups)),
        [s["cpu_s_per_1k"] for s in setups],
        color=[COLOURS.get(s["kind"], "#888") for s in setups],
    )
    axes.set_xticks(range(len(setups)), labels, rotation=30, ha="right")
    axes.set_ylabel("CPU seconds per 1000 requests")
    axes.grid(axis="y", alpha=0.3)
