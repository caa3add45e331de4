"""`clusterproof run`: run a suite of scenarios and write the report.
`clusterproof load`: the load benchmark (one load scenario, with overrides).

Exit codes (DESIGN.md): 0 every claim held (for the reproduce suite: the bug
reproduced as expected), 1 a claim failed, 2 the harness could not run a
scenario.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness import scenario as scenarios
from harness.database import DatabaseError, check_reachable, postgres_url
from harness.equivalence import EquivalenceRun
from harness.load.command import run_load
from harness.load.generator import LOCUSTFILE
from harness.load.sweep import LoadRun
from harness.report import write_junit, write_run_report
from harness.runner import (
    Interrupted,
    Options,
    ReportsError,
    ScenarioRun,
    interrupted_by,
    new_run_folder,
    point_latest,
)

EXIT_HELD = 0
EXIT_CLAIM_FAILED = 1
EXIT_HARNESS = 2

# Logs piped to a file (CI) keep the table readable rather than 80 columns.
console = Console(
    stderr=True, width=None if sys.stderr.isatty() else 120, log_path=False
)


def _instances(text: str) -> int:
    # One instance cannot duplicate anything: claims written per instance
    # ("mailed {instances} times") would hold and prove nothing.
    rule = "--instances must be a whole number from 2 to 16"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{rule}, got {text!r}") from None
    if not 2 <= value <= 16:
        raise argparse.ArgumentTypeError(
            f"{rule} (a duplicate needs two instances), got {value}"
        )
    return value


def _at_least(name: str, low: float, kind: type[int] | type[float] = int) -> Any:
    """An argparse type: a number of kind, at least low, named in the error."""
    what = "a whole number" if kind is int else "a number"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(
                f"{name} must be {what} of at least {low:g}, got {text!r}"
            )
        return value

    return parse


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

    load = commands.add_parser(
        "load", help="load the content API: cluster mode swept, beside its peers"
    )
    load.add_argument("--scenario", default="load-sweep", metavar="NAME")
    load.add_argument(
        "--scenarios", type=Path, default=scenarios.SCENARIO_DIR, metavar="DIR"
    )
    load.add_argument(
        "--duration",
        type=_at_least("--duration", scenarios.MIN_LOAD_SECONDS, float),
        metavar="SECONDS",
        help="load time of each point",
    )
    load.add_argument("--users", type=_at_least("--users", 1), metavar="N")
    load.add_argument(
        "--spawn-rate", type=_at_least("--spawn-rate", 0.1, float), metavar="N"
    )
    load.add_argument(
        "--workers-max",
        type=_at_least("--workers-max", 1),
        metavar="N",
        help="sweep cluster mode from 1 to N workers (default: the CPUs available)",
    )
    load.add_argument(
        "--load-processes",
        type=_at_least("--load-processes", 1),
        metavar="N",
        help="Locust processes generating the load (its master/worker mode)",
    )
    load.add_argument("--mix", choices=["read", "write"])
    load.add_argument("--rounds", type=_at_least("--rounds", 1), metavar="N")
    load.add_argument("--seed", type=int, metavar="N")
    load.add_argument("--database", metavar="URL", help="PostgreSQL server URL")
    load.add_argument("--locustfile", type=Path, default=LOCUSTFILE, metavar="PATH")
    load.add_argument("--reports", type=Path, default=Path("reports"))
    return root


def _select(
    suite: str, names: list[str], directory: Path
) -> list[scenarios.Scenario | scenarios.LoadScenario]:
    if not directory.is_dir():
        raise scenarios.ScenarioError(f"scenario folder {directory} does not exist")
    if not names:
        return scenarios.suite(suite, directory)
    selected = [scenarios.load(scenarios.find(name, directory)) for name in names]
    for scenario in selected:
        # A reproduce scenario "passes" when the bug shows: run by the gate,
        # it would turn verify-cluster green on a duplicate.
        if scenario.suite != suite:
            raise scenarios.ScenarioError(
                f"scenario {scenario.name!r} belongs to the {scenario.suite} "
                f"suite, not {suite}; run it with nox -s {scenario.suite}"
            )
    return selected


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
    if args.instances is not None and args.suite != "reproduce":
        # The gate's scenarios are topologies by design (one cluster primary,
        # a primary and a worker instance); more copies would test another.
        console.print(
            f"[red]error:[/] --instances applies to the reproduce suite only; "
            f"the {args.suite} scenarios fix their own topology"
        )
        return EXIT_HARNESS
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

    try:
        folder = new_run_folder(args.reports)
    except ReportsError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return EXIT_HARNESS
    options = Options(
        reports=args.reports, database=args.database, instances=args.instances
    )
    console.print(f"run folder: {folder}")
    results = []
    with console.status("starting") as status:

        def progress(name: str, stage: str) -> None:
            if stage.startswith(("cron: ", "load: ")):
                status.update(escape(f"{name}: {stage}"))
            else:
                console.log(escape(f"{name}: {stage}"))
                status.update(escape(f"{name}: {stage}"))

        try:
            for scenario in selected:
                where = folder / scenario.name
                if isinstance(scenario, scenarios.LoadScenario):
                    results.append(LoadRun(scenario, where, options, progress).run())
                    continue
                kind = EquivalenceRun if scenario.variants else ScenarioRun
                results.append(kind(scenario, where, options, progress).run())
        except KeyboardInterrupt as exc:
            # A report of what ran, and where the run stopped; latest keeps
            # pointing at the last run that finished.
            if isinstance(exc, Interrupted):
                results.append(exc.result)
            title = f"clusterproof {args.suite}: interrupted"
            index = write_run_report(folder, results, title=title)
            by = interrupted_by(exc)
            console.print(f"[yellow]interrupted by {by}: every instance was stopped[/]")
            console.print(f"report: {index}")
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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: object) -> None:
    # The first stop signal interrupts the run, which then tears its topology
    # down; a second one (Ctrl-C twice, nox passing on a signal the terminal
    # also sent) must not interrupt that teardown and leave instances behind.
    for each in STOP_SIGNALS:
        signal.signal(each, signal.SIG_IGN)
    raise KeyboardInterrupt(
        "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Instances run in sessions of their own, so a SIGTERM (a CI timeout, a
    # cancelled job) or SIGHUP (a closed terminal) that killed the harness
    # would leave them serving. Both stop the run as Ctrl-C does.
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)
    try:
        if args.command == "load":
            return run_load(args, console)
        return run(args)
    except Exception:
        # Python exits 1 on an uncaught exception, which a gate would read as
        # a failed claim; a fault of the harness is "could not run".
        console.print_exception()
        console.print("[red]error:[/] the harness failed; the traceback shows where")
        return EXIT_HARNESS


if __name__ == "__main__":
    sys.exit(main())
