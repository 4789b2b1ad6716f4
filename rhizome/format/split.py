"""Step "split": pairs -> train / validation / test, stratified by theme, never splitting a conversation.

Pairs are first joined into groups that must stay together: the pairs of one
conversation (or one PDF, whose ``conversation_id`` is the file), and pairs of
one near-duplicate group (``pair.dedup_group`` or the ``dedup_groups`` mapping),
merged transitively (union-find): otherwise a duplicate of a training pair in
the test split would flatter every evaluation.

Each group gets a stratum, the most common first theme of its pairs
(``pair.themes[0]``, ``"none"`` without themes). Themes with fewer groups than
it takes to give every split one (``ceil(1 / smallest ratio)``, 10 for
80/10/10) share one stratum, ``"~rare"``. Within each stratum, groups are
shuffled with the seed, ordered largest first, and each goes to the split that
is furthest below its ratio, in pairs, of that stratum plus of everything so far
(the second term evens out rounding across strata; ties go to train, then
validation). So every frequent theme is spread 80/10/10 by pair count, and any
data set with at least three groups gets a non-empty validation and test split
(a split left empty takes the smallest group of the largest split). Nothing here
fails on small data: a single group goes to train.

A hand-written greedy pass rather than scikit-learn's ``StratifiedGroupKFold``:
that one needs a groups x classes count matrix (thousands of themes), folds of
equal size (ratios only as multiples of 1/n), and at least n groups.

The result is deterministic for a seed and independent of the input order;
within a split, pairs keep their input order.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

from rhizome.format.records import Pair
from rhizome.log import get_logger

SPLITS = ("train", "validation", "test")
DEFAULT_RATIOS = (0.8, 0.1, 0.1)
DEFAULT_SEED = 42
RARE_STRATUM = "~rare"
NO_THEME = "none"

log = get_logger(__name__)


def split_pairs(pairs: Iterable[Pair], ratios: tuple[float, float, float] = DEFAULT_RATIOS,
                seed: int = DEFAULT_SEED, dedup_groups: Mapping[str, str] | None = None,
                ) -> dict[str, list[Pair]]:
    """``{"train": [...], "validation": [...], "test": [...]}`` as the module docstring describes.

    ``ratios`` are the shares of pairs for train, validation and test; they must
    sum to 1 and train's must be above 0 (a 0 leaves that split empty).
    ``dedup_groups`` maps a pair id to its near-duplicate group, on top of
    ``pair.dedup_group``.
    """
    ratios = _check_ratios(ratios)
    pairs = list(pairs)
    groups = _groups(pairs, dedup_groups or {})
    members: dict[int, list[int]] = defaultdict(list)  # group root -> indices of its pairs
    for index, root in enumerate(groups):
        members[root].append(index)
    keys = {root: min(pairs[i].id for i in indices) for root, indices in members.items()}  # order-free names
    strata = _strata(pairs, members, ratios)

    assigned: dict[int, int] = {}
    totals = [0] * len(SPLITS)
    for stratum in sorted(strata):
        roots = sorted(strata[stratum], key=keys.__getitem__)
        random.Random(f"{seed}:{stratum}").shuffle(roots)
        roots.sort(key=lambda root: -len(members[root]))  # stable: shuffled order among equal sizes
        counts = [0] * len(SPLITS)
        for root in roots:
            size = len(members[root])
            split = max(
                (s for s, ratio in enumerate(ratios) if ratio > 0),
                key=lambda s: (ratios[s] * (sum(counts) + size) - counts[s]
                               + ratios[s] * (sum(totals) + size) - totals[s], -s),
            )
            assigned[root] = split
            counts[split] += size
            totals[split] += size
    _fill_empty_splits(assigned, members, keys, ratios)

    result: dict[str, list[Pair]] = {name: [] for name in SPLITS}
    for index, root in enumerate(groups):
        result[SPLITS[assigned[root]]].append(pairs[index])
    return result


def _check_ratios(ratios: Iterable[float]) -> tuple[float, ...]:
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != len(SPLITS) or any(r < 0 for r in ratios) or ratios[0] <= 0:
        raise ValueError(f"split ratios must be three shares (train, validation, test), train's above 0, got {ratios}")
    if not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise ValueError(f"split ratios must sum to 1, got {ratios} (sum {sum(ratios):g})")
    return ratios


def _groups(pairs: list[Pair], dedup_groups: Mapping[str, str]) -> list[int]:
    """For each pair, the root of its group: pairs linked by a conversation or a dedup group share one."""
    parent = list(range(len(pairs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_with: dict[tuple[str, ...], int] = {}
    for index, pair in enumerate(pairs):
        links = [("conversation", pair.source, pair.conversation_id)]
        for group in (pair.dedup_group, dedup_groups.get(pair.id)):
            if group is not None:
                links.append(("dedup", group))
        for link in links:
            other = first_with.setdefault(link, index)
            if other != index:
                a, b = find(other), find(index)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(len(pairs))]


def _strata(pairs: list[Pair], members: dict[int, list[int]], ratios: tuple[float, ...]) -> dict[str, list[int]]:
    """Stratum -> group roots: each group's most common first theme, rare themes pooled."""
    labels = {}
    for root, indices in members.items():
        themes = Counter(pairs[i].themes[0] if pairs[i].themes else NO_THEME for i in indices)
        labels[root] = min(themes, key=lambda theme: (-themes[theme], theme))
    needed = math.ceil(1 / min(r for r in ratios if r > 0) - 1e-9)
    frequency = Counter(labels.values())
    strata: dict[str, list[int]] = defaultdict(list)
    for root, label in labels.items():
        strata[label if frequency[label] >= needed else RARE_STRATUM].append(root)
    return strata


def _fill_empty_splits(assigned: dict[int, int], members: dict[int, list[int]], keys: dict[int, str],
                       ratios: tuple[float, ...]) -> None:
    """Give each empty split (ratio > 0) the smallest group of the largest split, while that one has two or more."""
    for split, ratio in enumerate(ratios):
        if ratio <= 0 or split in assigned.values():
            continue
        sizes = Counter()
        groups_in = Counter(assigned.values())
        for root, s in assigned.items():
            sizes[s] += len(members[root])
        donor = max((s for s in groups_in if groups_in[s] >= 2), key=lambda s: (sizes[s], -s), default=None)
        if donor is None:
            continue
        smallest = min((root for root, s in assigned.items() if s == donor),
                       key=lambda root: (len(members[root]), keys[root]))
        log.debug("split %s was empty: it takes a group of %d pair(s) from %s", SPLITS[split],
                  len(members[smallest]), SPLITS[donor])
        assigned[smallest] = split
