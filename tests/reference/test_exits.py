from __future__ import annotations

import re
from pathlib import Path

import reference
from reference import exits

ROOT = Path(reference.__file__).parent


def test_exit_codes_are_distinct() -> None:
    codes = [getattr(exits, name) for name in exits.__all__]
    assert len(set(codes)) == len(codes) == 10


def test_exit_codes_are_named_in_exits_alone() -> None:
    defining = sorted(
        path.name
        for path in ROOT.rglob("*.py")
        if re.search(r"^EXIT_\w+ = \d+\b(?!\.)", path.read_text(), re.MULTILINE)
    )
    assert defining == ["exits.py"]


def test_readme_lists_every_exit_code() -> None:
    readme = (ROOT.parent / "README.md").read_text()
    listed = [int(code) for code in re.findall(r"^\| (\d+) \| ", readme, re.M)]
    assert listed == sorted(getattr(exits, name) for name in exits.__all__)
