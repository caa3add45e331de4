from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness import scenario as scenarios
from harness.runner import expected_publishes
from harness.scenario import expected_occurrences

MINIMAL = """
name = "tiny"
suite = "reproduce"
description = "one instance"
[clock]
pin = "2026-01-01T08:59:50Z"
until = "2026-01-01T09:01:05Z"
[[tasks]]
name = "daily-digest"
rule = "0 9 * * *"
effect = "email"
[[tasks]]
name = "publish-scheduled"
rule = "* * * * *"
effect = "publish"
[[claims]]
name = "digest once"
check = "emails_per_occurrence[daily-digest] == 1"
"""


def write(tmp_path: Path, text: str, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_shipped_scenarios_load() -> None:
    names = {path.stem for path in scenarios.SCENARIO_DIR.glob("*.toml")}
    assert {"two-instances", "boot-race"} <= names
    for path in scenarios.SCENARIO_DIR.glob("*.toml"):
        assert scenarios.load(path).name == path.stem


def test_expected_occurrences_cover_pin_to_until(tmp_path: Path) -> None:
    scenario = scenarios.load(write(tmp_path, MINIMAL))
    assert expected_occurrences(scenario) == [
        ("daily-digest", "2026-01-01T09:00:00Z"),
        ("publish-scheduled", "2026-01-01T09:00:00Z"),
        ("publish-scheduled", "2026-01-01T09:01:00Z"),
    ]


def test_days_of_the_week_are_numbered_as_crontab_numbers_them(
    tmp_path: Path,
) -> None:
    # A command target runs its own tasks; 2026-01-01 is a Thursday, day 4.
    text = (
        MINIMAL.replace('rule = "0 9 * * *"', 'rule = "0 9 * * 4"')
        + '[target]\nkind = "command"\ncommand = ["cms", "{port}"]\n'
    )
    scenario = scenarios.load(write(tmp_path, text))
    assert ("daily-digest", "2026-01-01T09:00:00Z") in expected_occurrences(scenario)


def test_expected_publishes_include_overdue_articles(tmp_path: Path) -> None:
    scenario = scenarios.load(write(tmp_path, MINIMAL))

    def at(clock: str) -> datetime:
        return datetime.fromisoformat(f"2026-01-01T{clock}").replace(tzinfo=UTC)

    created = [
        ({"id": 1}, at("08:59:40")),  # in the 09:00 window
        ({"id": 2}, at("07:00:00")),  # overdue: the first occurrence takes it
        ({"id": 3}, at("09:30:00")),  # due after the run
        ({"id": 4}, None),  # never scheduled
    ]
    assert expected_publishes(scenario, created) == [
        ("entry.publish", "article", 1, 1),
        ("entry.publish", "article", 2, 1),
    ]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name = ", "not valid TOML"),
        (MINIMAL.replace('suite = "reproduce"', 'suite = "nope"'), "suite"),
        (MINIMAL + "\nsurprise = 1\n", "surprise"),
        (MINIMAL.replace("09:01:05Z", "08:00:00Z"), "clock.until must be after"),
        (MINIMAL.replace("08:59:50Z", "soon"), "clock.pin"),
        (MINIMAL.replace("== 1", "== one"), "claim 'digest once'"),
        (
            MINIMAL.replace("emails_per", "sms_per"),
            "claim 'digest once': unknown metric 'sms_per_occurrence",
        ),
        (
            MINIMAL.replace("occurrence[daily-digest]", "occurrence[daily]"),
            "claim 'digest once': .* the task must be one of daily-digest, publish",
        ),
        (
            MINIMAL.replace('effect = "email"', 'effect = "fax"'),
            r"tasks\[0\]\.effect: input should be 'email' or 'publish' \(got 'fax'\)",
        ),
        (
            MINIMAL.replace("09:01:05Z", "09:30:00Z"),
            "clock.until must be at most 15 minutes after clock.pin",
        ),
        (
            MINIMAL.replace('rule = "0 9 * * *"', 'rule = "30 10 * * *"'),
            r"tasks\[0\]: the reference server runs daily-digest on '0 9 \* \* \*' in "
            "UTC, not '30 10",
        ),
        (
            MINIMAL.replace('name = "daily-digest"', 'name = "weekly-report"'),
            r"tasks\[0\]: the reference server has no task 'weekly-report'; it runs "
            "daily-digest, publish-scheduled",
        ),
        (
            MINIMAL + '[[faults]]\nkind = "terminate"\ninstance = "b"\n',
            r"faults\[0\].instance: 'b' is not one of the instances a",
        ),
        (
            MINIMAL.replace("08:59:50Z", "09:00:30Z"),
            "emails_per_occurrence\\[daily-digest\\]: task daily-digest has no fire "
            "time between clock.pin and clock.until",
        ),
        (
            MINIMAL.replace(
                'check = "emails', 'check = "failed_requests == 0 and emails'
            ),
            "failed_requests is measured under traffic only; set workload.writes",
        ),
        (
            MINIMAL.replace('rule = "0 9 * * *"', 'rule = "61 25 * * *"'),
            r"tasks\[0\]: task 'daily-digest': cron rule '61 25 \* \* \*' is not valid",
        ),
        (
            MINIMAL.replace(
                'rule = "* * * * *"', 'rule = "* * * * *"\ntz = "Mars/Base"'
            ),
            "time zone 'Mars/Base' of cron rule .* is unknown",
        ),
    ],
)
def test_broken_scenarios_name_the_problem(
    tmp_path: Path, text: str, match: str
) -> None:
    with pytest.raises(scenarios.ScenarioError, match=match):
        scenarios.load(write(tmp_path, text))


def test_a_bad_instant_is_shown_once(tmp_path: Path) -> None:
    text = MINIMAL.replace("2026-01-01T08:59:50Z", "yesterday")
    with pytest.raises(scenarios.ScenarioError) as raised:
        scenarios.load(write(tmp_path, text))
    assert str(raised.value).endswith(
        "clock.pin: an instant must be ISO 8601 like 2026-01-01T08:59:50Z, "
        "got 'yesterday'"
    )


NAIVE_ARTICLE = """
[[workload.articles]]
title = "a"
publish_at = "2026-01-01T08:59:20"
"""


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (MINIMAL.replace('"2026-01-01T08:59:50Z"', "2026-01-01T08:59:50"), "clock.pin"),
        (MINIMAL + NAIVE_ARTICLE, r"workload.articles\[0\].publish_at"),
    ],
)
def test_an_instant_without_a_zone_is_refused(
    tmp_path: Path, text: str, where: str
) -> None:
    with pytest.raises(
        scenarios.ScenarioError, match=f"{where}: an instant needs a time zone"
    ):
        scenarios.load(write(tmp_path, text))


def test_the_name_must_match_the_file(tmp_path: Path) -> None:
    with pytest.raises(
        scenarios.ScenarioError,
        match="name 'tiny' must match the file name; rename the file to tiny.toml",
    ):
        scenarios.load(write(tmp_path, MINIMAL, name="small"))


def test_unknown_scenario_lists_the_known_ones() -> None:
    with pytest.raises(
        scenarios.ScenarioError, match="known scenarios: .*two-instances"
    ):
        scenarios.find("three-instances")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(scenarios.ScenarioError, match="does not exist"):
        scenarios.load(tmp_path / "absent.toml")
