"""Splits: groups never cross, ratios and themes are respected, deterministic, small data never fails."""

import itertools
import random
from collections import Counter

import pytest

from rhizome.format.records import Pair
from rhizome.format.split import SPLITS, split_pairs

THEMES = ["bees", "mushrooms", "bikes", "python", "cooking"]


def make_pairs(conversations=200, seed=1):
    """~1000 pairs in ``conversations`` conversations of 1-9 pairs; 85% of them on one of five themes."""
    rng = random.Random(seed)
    pairs = []
    for c in range(conversations):
        theme = rng.choice(THEMES) if rng.random() < 0.85 else f"rare{rng.randrange(40)}"
        source = rng.choice(["chatgpt", "claude", "pdf"])
        for k in range(rng.randint(1, 9)):
            pairs.append(Pair(id=f"{source}:c{c}:{k}", messages=[], source=source, conversation_id=f"c{c}",
                              themes=[theme, "extra"] if k % 3 else [theme]))
    return pairs


def conversations_of(split):
    return {(p.source, p.conversation_id) for p in split}


def ids(splits):
    return {name: [p.id for p in split] for name, split in splits.items()}


def test_every_pair_lands_once_and_conversations_never_cross():
    pairs = make_pairs()
    splits = split_pairs(pairs)
    assert list(splits) == list(SPLITS)
    assert sorted(p.id for split in splits.values() for p in split) == sorted(p.id for p in pairs)
    train, validation, test = (conversations_of(splits[name]) for name in SPLITS)
    assert not train & validation and not train & test and not validation & test


def test_ratios_are_roughly_respected():
    pairs = make_pairs()
    assert 900 < len(pairs) < 1200
    sizes = {name: len(split) / len(pairs) for name, split in split_pairs(pairs).items()}
    assert sizes["train"] == pytest.approx(0.8, abs=0.03)
    assert sizes["validation"] == pytest.approx(0.1, abs=0.03)
    assert sizes["test"] == pytest.approx(0.1, abs=0.03)
    other = {name: len(split) / len(pairs) for name, split in split_pairs(pairs, ratios=(0.7, 0.2, 0.1)).items()}
    assert (other["train"], other["validation"], other["test"]) == pytest.approx((0.7, 0.2, 0.1), abs=0.03)


def test_each_frequent_theme_is_in_every_split_in_proportion():
    pairs = make_pairs()
    splits = split_pairs(pairs)
    totals = Counter(p.themes[0] for p in pairs)
    for name, share in zip(SPLITS, (0.8, 0.1, 0.1)):
        themes = Counter(p.themes[0] for p in splits[name])
        for theme in THEMES:
            assert themes[theme] > 0, (name, theme)
            assert themes[theme] / totals[theme] == pytest.approx(share, abs=0.06), (name, theme)


def test_deterministic_for_a_seed_and_independent_of_input_order():
    pairs = make_pairs()
    first = ids(split_pairs(pairs, seed=7))
    assert ids(split_pairs(pairs, seed=7)) == first
    shuffled = pairs[:]
    random.Random(3).shuffle(shuffled)
    assert {name: sorted(v) for name, v in ids(split_pairs(shuffled, seed=7)).items()} == \
        {name: sorted(v) for name, v in first.items()}
    assert ids(split_pairs(pairs, seed=8)) != first
    order = {p.id: i for i, p in enumerate(pairs)}
    assert all(order[a] < order[b] for v in first.values() for a, b in itertools.pairwise(v))  # input order kept


def test_dedup_groups_are_kept_together():
    pairs = make_pairs()
    for i, p in enumerate(pairs):
        if i % 10 == 0:
            p.dedup_group = "dup-a"  # one near-duplicate group spread over many conversations
    mapping = {pairs[1].id: "dup-b", pairs[-1].id: "dup-b", pairs[500].id: "dup-b"}
    splits = split_pairs(pairs, dedup_groups=mapping)
    where = {p.id: name for name, split in splits.items() for p in split}
    assert len({where[p.id] for p in pairs if p.dedup_group == "dup-a"}) == 1
    assert len({where[i] for i in mapping}) == 1
    for name in SPLITS:  # conversations linked through a dedup group stay whole too
        for other in SPLITS:
            if name != other:
                assert not conversations_of(splits[name]) & conversations_of(splits[other])


@pytest.mark.parametrize("sizes", [[], [1], [5], [1, 1], [1, 1, 1], [5, 1, 1], [1, 1, 1, 1, 1], [30, 2, 2, 1]])
def test_tiny_data_sets_never_fail(sizes):
    pairs = [Pair(id=f"x:{g}:{k}", messages=[], source="custom", conversation_id=str(g), themes=[f"t{g}"])
             for g, n in enumerate(sizes) for k in range(n)]
    splits = split_pairs(pairs, seed=0)
    assert sum(len(split) for split in splits.values()) == len(pairs)
    if pairs:
        assert splits["train"]
    if len(sizes) >= 3:
        assert splits["validation"] and splits["test"]


def test_zero_ratio_leaves_a_split_empty_and_bad_ratios_are_refused():
    splits = split_pairs(make_pairs(50), ratios=(0.9, 0.1, 0.0))
    assert splits["test"] == [] and splits["validation"]
    for ratios in [(0.5, 0.3, 0.1), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1), (0.5, 0.5)]:
        with pytest.raises(ValueError, match="ratios"):
            split_pairs([], ratios=ratios)
