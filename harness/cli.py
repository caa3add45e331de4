"""`clusterproof run`: run a suite of scenarios and write the report.

Exit codes (DESIGN.md): 0 every claim held (for the reproduce suite: the bug
reproduced as expected), 1 a claim failed, 2 the harness could not run a
scenario.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness import scenario as scenarios
from harness.database import DatabaseError, check_reachable, postgres_url
from harness.equivalence import EquivalenceRun
from harness.report import write_junit, write_run_report
from harness.runner import Options, ScenarioRun, new_run_folder, point_latest

EXIT_HELD = 0
EXIT_CLAIM_FAILED = 1
EXIT_HARNESS = 2

# Logs piped to a file (CI) keep the table readable rather than 80 columns.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def _instances(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--instances must be a whole number from 1 to 16, got {text!r}"
        ) from None
    if not 1 <= value <= 16:
        raise argparse.ArgumentTypeError(
            f"--instances must be a whole number from 1 to 16, got {value}"
        )
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="clusterproof")
    commands = root.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a suite of scenarios")
    run.add_argument("--suite", choices=["reproduce", "verify-cluster"], required=True)
    run.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this scenario (repeatable)",
    )
    run.add_argument(
        "--database",
        metavar="URL",
        help="PostgreSQL server URL, e.g. postgresql://postgres@127.0.0.1/postgres "
        "(default: an SQLite file per scenario)",
    )
    run.add_argument("--instances", type=_instances, metavar="N")
    run.add_argument(
        "--scenarios",
        type=Path,
        default=scenarios.SCENARIO_DIR,
        metavar="DIR",
        help="folder of scenario files (default: the shipped scenarios)",
    )
    run.add_argument("--reports", type=Path, default=Path("reports"))
    return root


def _select(suite: str, names: list[str], directory: Path) -> list[scenarios.Scenario]:
    if not directory.is_dir():
        raise scenarios.ScenarioError(f"scenario folder {directory} does not exist")
    if not names:
        return scenarios.suite(suite, directory)
    return [scenarios.load(scenarios.find(name, directory)) for name in names]


def _table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="clusterproof")
    for column in ("scenario", "verdict", "executions", "duplicates", "lost"):
        table.add_column(column)
    for column in ("emails", "webhooks", "migrations", "claims held"):
        table.add_column(column, justify="right")
    for result in results:
        claims = result.get("claims", [])
        held = sum(1 for claim in claims if claim["held"])
        colour = {"reproduced": "green", "held": "green", "error": "yellow"}.get(
            result["verdict"], "red"
        )
        table.add_row(
            result["scenario"],
            f"[{colour}]{result['verdict']}[/]",
            str(result.get("executions", "-")),
            str(result.get("duplicates", "-")),
            str(result.get("lost", "-")),
            str(result.get("emails", "-")),
            str(result.get("webhooks", "-")),
            str(result.get("migration_runs", "-")),
            f"{held}/{len(claims)}",
        )
    return table


def exit_code(results: list[dict[str, Any]]) -> int:
    if any(result["verdict"] == "error" for result in results):
        return EXIT_HARNESS
    if all(claim["held"] for result in results for claim in result["claims"]):
        return EXIT_HELD
    return EXIT_CLAIM_FAILED


def run(args: argparse.Namespace) -> int:
    try:
        selected = _select(args.suite, args.scenario, args.scenarios)
        if args.database:
            check_reachable(postgres_url(args.database))
    except (scenarios.ScenarioError, DatabaseError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return EXIT_HARNESS
    if not selected:
        console.print(f"[red]error:[/] no scenario belongs to suite {args.suite!r}")
        return EXIT_HARNESS

    folder = new_run_folder(args.reports)
    options = Options(
        reports=args.reports, database=args.database, instances=args.instances
    )
    console.print(f"run folder: {folder}")
    results = []
    with console.status("starting") as status:

        def progress(name: str, stage: str) -> None:
            if stage.startswith("cron: "):
                status.update(escape(f"{name}: {stage}"))
            else:
                console.log(escape(f"{name}: {stage}"))
                status.update(escape(f"{name}: {stage}"))

        try:
            for scenario in selected:
                kind = EquivalenceRun if scenario.variants else ScenarioRun
                run = kind(scenario, folder / scenario.name, options, progress)
                results.append(run.run())
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: every instance was stopped[/]")
            return EXIT_HARNESS

    index = write_run_report(folder, results, title=f"clusterproof {args.suite}")
    if args.suite == "verify-cluster":
        write_junit(folder / "junit.xml", results)
    point_latest(args.reports, folder)

    console.print(_table(results))
    for result in results:
        if "error" in result:
            error = result["error"]
            console.print(
                f"[yellow]{result['scenario']}: stopped at {error['stage']}:[/] "
                f"{escape(error['message'])}"
            )
        for claim in result["claims"]:
            if not claim["held"]:
                console.print(
                    f"[red]{result['scenario']}: claim failed:[/] "
                    + escape(
                        f"{claim['name']}: expected {claim['expected']}, "
                        f"observed {claim['observed']}"
                    )
                )
    console.print(f"report: {index}")
    return exit_code(results)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
