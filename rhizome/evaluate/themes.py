"""Rare and common themes, defined by the training split, and which test pairs fall in each group.

A theme is *rare* when at most ``rare_max_pairs`` training pairs carry it (default 2); a theme that
appears in the test split but never in training has 0 pairs and is always rare. The threshold is an
absolute count rather than a quantile because theme frequencies from keyword labelling are heavily
skewed (most themes of the sample data occur once), so any quantile collapses to 1 anyway, and an absolute
count means the same thing across the variants the claims benchmark compares.

A test pair is *rare* when all of its themes are rare (``rare_rule="all"``: nothing in it is a topic
training saw often) or, with ``rare_rule="any"``, when at least one is. Every other pair with themes is
*common*; pairs without themes count only in ``overall``. So ``rare`` and ``common`` partition the tagged pairs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence


def training_theme_counts(themes_of_pairs: Iterable[Iterable[str]]) -> Counter:
    """Number of training pairs that carry each theme (a theme listed twice in one pair counts once)."""
    return Counter(t for themes in themes_of_pairs for t in set(themes))


def rare_themes(test_themes: Iterable[Iterable[str]], train_counts: Counter, rare_max_pairs: int) -> list[str]:
    """The test split's themes carried by at most ``rare_max_pairs`` training pairs, sorted."""
    present = {t for themes in test_themes for t in themes}
    return sorted(t for t in present if train_counts[t] <= rare_max_pairs)


def pair_groups(test_themes: Sequence[Sequence[str]], rare: Iterable[str], rule: str = "all") -> dict[str, list[int]]:
    """Indices of the test pairs in the ``rare`` and ``common`` groups."""
    if rule not in ("all", "any"):
        raise ValueError(f"rare_rule must be 'all' or 'any', got {rule!r}")
    rare_set = set(rare)
    test = all if rule == "all" else any
    groups: dict[str, list[int]] = {"rare": [], "common": []}
    for i, themes in enumerate(test_themes):
        if themes:
            groups["rare" if test(t in rare_set for t in themes) else "common"].append(i)
    return groups


def theme_members(test_themes: Sequence[Sequence[str]]) -> dict[str, list[int]]:
    """Indices of the test pairs carrying each theme."""
    members: dict[str, list[int]] = {}
    for i, themes in enumerate(test_themes):
        for t in dict.fromkeys(themes):
            members.setdefault(t, []).append(i)
    return members
