from __future__ import annotations

import pytest

from harness.claims import (
    Both,
    ClaimError,
    Comparison,
    Either,
    evaluate,
    parse_claim,
)

METRICS = {
    "duplicates": 0,
    "emails": 2,
    "max_migration_runs_per_revision": 1,
    "failed_instances": 1,
    "emails_per_occurrence[daily-digest]": [2, 2],
    "deliveries_per_event[entry.publish]": [1, 2],
    "executions_per_occurrence[publish-scheduled]": [],
    "fire_latency_p95_ms[daily-digest]": 183.4,
}


def test_parse_a_comparison_with_a_keyed_metric() -> None:
    claim = parse_claim("emails_per_occurrence[daily-digest]   ==  2")
    assert claim.expression == Comparison(
        "emails_per_occurrence[daily-digest]", "==", 2
    )
    assert claim.text == "emails_per_occurrence[daily-digest] == 2"


def test_or_binds_looser_than_and() -> None:
    claim = parse_claim("a == 1 or b == 2 and c == 3")
    assert claim.expression == Either(
        (
            Comparison("a", "==", 1),
            Both((Comparison("b", "==", 2), Comparison("c", "==", 3))),
        )
    )


def test_parentheses_group() -> None:
    claim = parse_claim("(a == 1 or b == 2) and c < 3")
    assert claim.expression == Both(
        (
            Either((Comparison("a", "==", 1), Comparison("b", "==", 2))),
            Comparison("c", "<", 3),
        )
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "emails == two",
            "claim 'emails == two': expected a number after '==', got 'two'",
        ),
        (
            "emails = 2",
            r"expected an operator \(== != < <= > >=\) after 'emails', got '='",
        ),
        ("emails == 2 and", "expected a metric name after 'and', got the end"),
        (
            "emails == 2 duplicates == 0",
            "expected 'and', 'or' or the end after '2', got 'duplicates'",
        ),
        ("(emails == 2", "expected '\\)' after '2', got the end"),
        ("== 2", "expected a metric name, got '=='"),
        ("or == 1", "expected a metric name, got 'or'"),
        ("   ", "expected a metric, got nothing"),
    ],
)
def test_bad_syntax_is_refused_with_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(ClaimError, match=message):
        parse_claim(text)


def test_a_claim_that_holds() -> None:
    result = evaluate(
        "emails_per_occurrence[daily-digest] == 2 and duplicates == 0", METRICS
    )
    assert result.held is True
    assert (
        result.expected
        == "emails_per_occurrence[daily-digest] == 2 and duplicates == 0"
    )
    assert (
        result.observed
        == "emails_per_occurrence[daily-digest] = [2, 2]; duplicates = 0"
    )


def test_a_claim_that_fails_shows_the_figure() -> None:
    result = evaluate("deliveries_per_event[entry.publish] == 1", METRICS, name="once")
    assert result.held is False
    assert result.name == "once"
    assert result.observed == "deliveries_per_event[entry.publish] = [1, 2]"
    assert result.as_dict() == {
        "name": "once",
        "expected": "deliveries_per_event[entry.publish] == 1",
        "observed": "deliveries_per_event[entry.publish] = [1, 2]",
        "held": False,
    }


def test_a_long_list_is_shown_as_a_tally() -> None:
    metrics = {"deliveries_per_event[entry.create]": [1] * 40 + [2, 0]}
    result = evaluate("deliveries_per_event[entry.create] == 1", metrics)
    assert result.held is False
    assert result.observed == "deliveries_per_event[entry.create] = [0 ×1, 1 ×40, 2 ×1]"


def test_or_holds_when_one_side_does() -> None:
    result = evaluate(
        "max_migration_runs_per_revision >= 2 or failed_instances >= 1", METRICS
    )
    assert result.held is True
    assert (
        result.observed == "max_migration_runs_per_revision = 1; failed_instances = 1"
    )


@pytest.mark.parametrize(
    ("text", "held"),
    [
        ("emails != 3", True),
        ("emails < 3", True),
        ("emails <= 2", True),
        ("emails > 2", False),
        ("emails >= 2.5", False),
        ("fire_latency_p95_ms[daily-digest] < 200", True),
        ("fire_latency_p95_ms[daily-digest] < 1.5e2", False),
    ],
)
def test_every_operator(text: str, held: bool) -> None:
    assert evaluate(text, METRICS).held is held


def test_an_unknown_metric_does_not_hold_and_says_so() -> None:
    result = evaluate("webhooks == 0", METRICS)
    assert result.held is False
    assert result.observed == "metric 'webhooks' was not measured"


def test_an_empty_list_metric_does_not_hold() -> None:
    result = evaluate("executions_per_occurrence[publish-scheduled] == 1", METRICS)
    assert result.held is False
    assert result.observed == "executions_per_occurrence[publish-scheduled] = []"


def test_a_parsed_claim_can_be_evaluated_again() -> None:
    claim = parse_claim("duplicates == 0")
    assert evaluate(claim, {"duplicates": 0}).held is True
    assert evaluate(claim, {"duplicates": 1}).held is False
