"""The articles every load point starts from, and the words the title filter
looks for: shared by the harness (which seeds) and the Locust file (which
reads), with no import of Locust, so the harness never loads gevent."""

from __future__ import annotations

import random

WORDS = (
    "harbour",
    "lantern",
    "meadow",
    "granite",
    "orchard",
    "compass",
    "ember",
    "willow",
    "quarry",
    "beacon",
    "thistle",
    "cinder",
)
PAGE_SIZE = 10


def titles(count: int, seed: int) -> list[str]:
    """count titles made of two words and a number, the same for a seed.

    titles(2, 1) -> ['meadow ember 1', 'granite lantern 2'] (for example)
    """
    rng = random.Random(seed)
    return [f"{rng.choice(WORDS)} {rng.choice(WORDS)} {n}" for n in range(1, count + 1)]
