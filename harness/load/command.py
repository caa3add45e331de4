"""`clusterproof load`: one load scenario, with the command line's overrides,
into a run folder with index.html, result.json and Locust's CSV files.

Exit codes as for `clusterproof run`: 0 every threshold held, 1 one failed,
2 the harness could not run the load.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness import scenario as scenarios
from harness.database import DatabaseError, check_reachable, postgres_url
from harness.load.generator import LoadError, check_locustfile
from harness.load.sweep import LoadRun
from harness.report import write_run_report
from harness.runner import (
    Interrupted,
    Options,
    ReportsError,
    interrupted_by,
    new_run_folder,
    point_latest,
)

EXIT_HELD = 0
EXIT_THRESHOLD_FAILED = 1
EXIT_HARNESS = 2

# Command-line option -> field of the scenario's [load] table.
OVERRIDES = {
    "duration": "duration",
    "users": "users",
    "spawn_rate": "spawn_rate",
    "workers_max": "workers_max",
    "load_processes": "load_processes",
    "mix": "mix",
    "rounds": "rounds",
    "seed": "seed",
}


def scenario_with_overrides(args: argparse.Namespace) -> scenarios.LoadScenario:
    """The named load scenario, with every option given on the command line
    applied and validated as if it had been written in the file."""
    path = scenarios.find(args.scenario, args.scenarios)
    found = scenarios.load(path)
    if not isinstance(found, scenarios.LoadScenario):
        raise scenarios.ScenarioError(
            f"scenario {args.scenario!r} has no [load] table; name a load "
            "scenario such as load-sweep"
        )
    given = {
        field: getattr(args, option)
        for option, field in OVERRIDES.items()
        if getattr(args, option) is not None
    }
    try:
        load = scenarios.Load.model_validate(found.load.model_dump() | given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise scenarios.ScenarioError(
            f"--{where.replace('_', '-')}: {first['msg'].lower()} "
            f"(got {first.get('input')!r})"
        ) from None
    return found.model_copy(update={"load": load})


def run_load(args: argparse.Namespace, console: Console) -> int:
    try:
        scenario = scenario_with_overrides(args)
        if args.database:
            check_reachable(postgres_url(args.database))
        # Before any server starts: a broken Locust file costs nothing.
        check_locustfile(args.locustfile)
        folder = new_run_folder(args.reports)
    except (scenarios.ScenarioError, DatabaseError, LoadError, ReportsError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return EXIT_HARNESS

    options = Options(reports=args.reports, database=args.database)
    console.print(f"run folder: {folder}")
    with console.status("starting") as status:

        def progress(name: str, stage: str) -> None:
            status.update(escape(f"{name}: {stage}"))
            if not stage.startswith("load: "):
                console.log(escape(f"{name}: {stage}"))

        try:
            result = LoadRun(
                scenario, folder / scenario.name, options, progress, args.locustfile
            ).run()
        except KeyboardInterrupt as exc:
            results = [exc.result] if isinstance(exc, Interrupted) else []
            title = f"clusterproof load: {scenario.name}: interrupted"
            index = write_run_report(folder, results, title=title)
            by = interrupted_by(exc)
            console.print(f"[yellow]interrupted by {by}: every process was stopped[/]")
            console.print(f"report: {index}")
            return EXIT_HARNESS

    index = write_run_report(
        folder, [result], title=f"clusterproof load: {scenario.name}"
    )
    point_latest(args.reports, folder)
    console.print(setups_table(result))
    return report_outcome(result, console, index)


def setups_table(result: dict[str, Any]) -> Table:
    mix = result["load"].get("settings", {}).get("mix", "?")
    table = Table(
        title=f"{result['scenario']} ({mix} mix)",
        caption="medians of the rounds (p99 and each round: the report); "
        "spread: highest minus lowest round over the median; p50 and p95 in "
        "ms; CPU: server CPU-seconds per 1000 requests; Locust: its busiest "
        "process, % of a core",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1, 0, 0),
    )
    table.add_column("setup", no_wrap=True)
    for column in ("rps", "spread", "p50", "p95", "errors", "CPU", "Locust",
                   "balance"):  # fmt: skip
        table.add_column(column, justify="right", min_width=len(column))
    for row in result["load"].get("setups", []):
        saturated = " (saturated)" if row["generator_saturated"] else ""
        table.add_row(
            row["setup"],
            f"{row['rps']:.0f}",
            "-" if row["rps_spread"] is None else f"{row['rps_spread']:.0%}",
            f"{row['p50_ms']:.0f}",
            f"{row['p95_ms']:.0f}",
            f"{row['error_rate']:.1%}",
            f"{row['cpu_s_per_1k']:.2f}",
            f"{row['generator_busiest_percent']:.0f}{saturated}",
            "-" if row["balance"] is None else f"{row['balance']:.2f}",
        )
    return table


def report_outcome(result: dict[str, Any], console: Console, index: Path) -> int:
    if "error" in result:
        error = result["error"]
        stage, message = escape(error["stage"]), escape(error["message"])
        console.print(f"[yellow]stopped at {stage}:[/] {message}")
        console.print(f"report: {index}")
        return EXIT_HARNESS
    for claim in result["claims"]:
        colour = "green" if claim["held"] else "red"
        word = "held" if claim["held"] else "not held"
        console.print(
            f"[{colour}]{word}:[/] "
            + escape(
                f"{claim['name']}: {claim['expected']} (observed {claim['observed']})"
            )
        )
    console.print(f"report: {index}")
    held = all(claim["held"] for claim in result["claims"])
    return EXIT_HELD if held else EXIT_THRESHOLD_FAILED
