"""Claim expressions: `<metric> <op> <number>` joined by `and` / `or`.

    duplicates == 0
    emails_per_occurrence[daily-digest] == 2
    max_migration_runs_per_revision >= 2 or failed_instances >= 1
    scaling(2) >= 1.4

`and` binds tighter than `or`; parentheses group. A metric is a number, or a
list of numbers (one per occurrence or event) that satisfies a comparison
when it is non-empty and every element does. A metric with an argument in
parentheses, `scaling(2)`, is looked up under that name without spaces.
"""

from __future__ import annotations

import operator
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, NoReturn

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}

# A list of more figures than this (one per event of a busy run) is shown as
# a tally of its values: a person reads "[1 ×41, 2 ×1]", not 42 numbers.
LIST_SHOWN_WHOLE = 8

# Longest operators first, so '<=' is not read as '<' then '='. A stray
# character is its own token, so the parser can name it in its error.
_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?![\w.\[])"
    r"|(?P<metric>[A-Za-z_]\w*(?:\[[^\[\]]+\]|\(\s*[\w.-]+\s*\))?)"
    r"|(?P<op>==|!=|<=|>=|<|>)"
    r"|(?P<paren>[()])"
    r"|(?P<other>\S+?)(?=\s|$|[()])"
    r")"
)


class ClaimError(ValueError):
    """A claim expression that cannot be parsed."""


@dataclass(frozen=True)
class Comparison:
    metric: str
    op: str
    number: float

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {_format(self.number)}"


@dataclass(frozen=True)
class Both:
    parts: tuple[Expression, ...]


@dataclass(frozen=True)
class Either:
    parts: tuple[Expression, ...]


Expression = Comparison | Both | Either


@dataclass(frozen=True)
class Claim:
    text: str
    expression: Expression

    def metrics(self) -> list[str]:
        """The metrics the claim compares: 'a == 0 and b < 1' -> ['a', 'b']."""
        return _metrics_of(self.expression)


def _metrics_of(expression: Expression) -> list[str]:
    if isinstance(expression, Comparison):
        return [expression.metric]
    return [name for part in expression.parts for name in _metrics_of(part)]


@dataclass(frozen=True)
class ClaimResult:
    name: str
    expected: str
    observed: str
    held: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_claim(text: str) -> Claim:
    """Parse a claim, or raise ClaimError saying what was expected where."""
    tokens = _tokenize(text)
    parser = _Parser(text, tokens)
    expression = parser.either()
    if parser.peek() is not None:
        parser.fail("'and', 'or' or the end", after=parser.previous())
    return Claim(text=" ".join(text.split()), expression=expression)


def evaluate(
    claim: Claim | str, metrics: Mapping[str, Any], name: str | None = None
) -> ClaimResult:
    """Evaluate a claim against the checker's metrics.

    A metric that was not measured makes its comparison fail (it is reported,
    not raised): a claim about something that never happened does not hold.
    """
    if isinstance(claim, str):
        claim = parse_claim(claim)
    observed: dict[str, str] = {}
    held = _holds(claim.expression, metrics, observed)
    return ClaimResult(
        name=name or claim.text,
        expected=claim.text,
        observed="; ".join(observed.values()),
        held=held,
    )


def _holds(
    expression: Expression, metrics: Mapping[str, Any], observed: dict[str, str]
) -> bool:
    # Every part is evaluated, not short-circuited, so the observed text
    # shows every figure the claim names.
    if isinstance(expression, Both):
        return all([_holds(part, metrics, observed) for part in expression.parts])
    if isinstance(expression, Either):
        return any([_holds(part, metrics, observed) for part in expression.parts])

    value = metrics.get(expression.metric)
    compare = OPERATORS[expression.op]
    if value is None:
        observed[expression.metric] = f"metric '{expression.metric}' was not measured"
        return False
    observed[expression.metric] = f"{expression.metric} = {_format(value)}"
    if isinstance(value, list | tuple):
        return bool(value) and all(compare(v, expression.number) for v in value)
    return compare(value, expression.number)


def _format(value: Any) -> str:
    """[1, 2] -> '[1, 2]'; a long list as a tally, [1 ×41, 2 ×1]."""
    if isinstance(value, list | tuple) and len(value) > LIST_SHOWN_WHOLE:
        tally = sorted(Counter(value).items())
        return "[" + ", ".join(f"{_format(v)} ×{n}" for v, n in tally) + "]"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_format(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens = []
    position, end = 0, len(text.rstrip())
    while position < end:
        match = _TOKEN.match(text, position)
        assert match is not None and match.lastgroup is not None  # 'other' or blank
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        position = match.end()
    if not tokens:
        raise ClaimError(f"claim {text!r}: expected a metric, got nothing")
    return tokens


class _Parser:
    """Recursive descent over the grammar

    either     := both ("or" both)*
    both       := term ("and" term)*
    term       := "(" either ")" | comparison
    comparison := metric op number
    """

    def __init__(self, text: str, tokens: list[tuple[str, str]]) -> None:
        self.text = text
        self.tokens = tokens
        self.index = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def previous(self) -> str | None:
        return self.tokens[self.index - 1][1] if self.index else None

    def fail(self, wanted: str, after: str | None) -> NoReturn:
        token = self.peek()
        got = "the end" if token is None else repr(token[1])
        where = f" after {after!r}" if after else ""
        raise ClaimError(f"claim {self.text!r}: expected {wanted}{where}, got {got}")

    def either(self) -> Expression:
        parts = [self.both()]
        while self._keyword("or"):
            parts.append(self.both())
        return parts[0] if len(parts) == 1 else Either(tuple(parts))

    def both(self) -> Expression:
        parts = [self.term()]
        while self._keyword("and"):
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else Both(tuple(parts))

    def term(self) -> Expression:
        token = self.peek()
        if token == ("paren", "("):
            self.index += 1
            inner = self.either()
            self.expect("paren", "')'", after=self.previous())
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        if self.peek() in (("metric", "and"), ("metric", "or")):
            self.fail("a metric name", after=self.previous())
        metric = self.expect("metric", "a metric name", after=self.previous())
        if "(" in metric:
            metric = "".join(metric.split())
        op = self.expect("op", "an operator (== != < <= > >=)", after=metric)
        number = self.expect("number", "a number", after=op)
        return Comparison(metric=metric, op=op, number=float(number))

    def expect(self, kind: str, wanted: str, after: str | None) -> str:
        token = self.peek()
        if token is None or token[0] != kind:
            self.fail(wanted, after)
        self.index += 1
        return token[1]

    def _keyword(self, word: str) -> bool:
        if self.peek() == ("metric", word):
            self.index += 1
            return True
        return False
