import numpy as np
import pytest

from rhizome.format.dedup import dedup_pairs, exact_dedup, normalized_text, similar_pairs
from rhizome.format.records import Pair


def make_pair(pair_id, prompt, reply, quality=0.5):
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
    return Pair(id=pair_id, messages=messages, source="chatgpt", conversation_id="c", quality=quality)


def unit_rows(n, dim=48, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near_copy(vector, cosine, seed):
    """A unit vector at exactly ``cosine`` to ``vector``."""
    noise = np.random.default_rng(seed).standard_normal(vector.shape).astype(np.float64)
    noise -= noise.dot(vector) * vector
    noise /= np.linalg.norm(noise)
    return (cosine * vector + np.sqrt(1 - cosine**2) * noise).astype(np.float32)


def brute_force_pairs(vectors, threshold):
    sims = vectors.astype(np.float64) @ vectors.astype(np.float64).T
    i, j = np.nonzero(np.triu(sims >= threshold, k=1))
    return set(zip(i.tolist(), j.tolist()))


def test_normalized_text_ignores_case_punctuation_and_spacing():
    assert normalized_text("Hello,   World!\n") == normalized_text("hello world") == "hello world"
    assert normalized_text("ÉCOLE") == normalized_text("école")
    assert normalized_text("hello world") != normalized_text("hello there world")


def test_exact_dedup_keeps_highest_quality_and_marks_group():
    pairs = [
        make_pair("b", "What is IPF?", "Iterative proportional fitting.", quality=0.4),
        make_pair("a", "what is ipf", "Iterative  proportional fitting", quality=0.9),
        make_pair("c", "Something else", "entirely", quality=0.1),
    ]
    kept, stats = exact_dedup(pairs)
    assert [p.id for p in kept] == ["a", "c"]
    assert stats.exact_removed == 1 and stats.groups == {"a": ["a", "b"]}
    assert pairs[0].dedup_group == "a" and pairs[1].dedup_group == "a" and pairs[2].dedup_group is None


def test_exact_dedup_tie_goes_to_smallest_id_whatever_the_order():
    for order in (["z", "m", "k"], ["k", "z", "m"]):
        pairs = [make_pair(i, "same prompt", "same reply", quality=0.7) for i in order]
        kept, _ = exact_dedup(pairs)
        assert [p.id for p in kept] == ["k"]


def test_exact_dedup_uses_given_scores_over_quality():
    pairs = [make_pair("a", "q", "r", quality=0.9), make_pair("b", "q", "r", quality=0.1)]
    kept, _ = exact_dedup(pairs, scores=[0.0, 1.0])
    assert kept[0].id == "b"
    kept, _ = exact_dedup(pairs, scores=lambda p: len(p.id) + (p.id == "b"))
    assert kept[0].id == "b"


@pytest.mark.parametrize("exact_max", [10_000, 0], ids=["flat", "ivf"])
def test_similar_pairs_match_brute_force(exact_max):
    vectors = unit_rows(600, dim=48, seed=1)
    for k, (a, b, cos) in enumerate([(0, 1, 0.99), (2, 3, 0.96), (4, 5, 0.951), (6, 7, 0.949), (8, 9, 0.90)]):
        vectors[b] = near_copy(vectors[a], cos, seed=k)
    i, j, info = similar_pairs(vectors, 0.95, exact_max=exact_max)
    found = set(zip(i.tolist(), j.tolist()))
    assert found == brute_force_pairs(vectors, 0.95) == {(0, 1), (2, 3), (4, 5)}
    assert ("IVF" in info["search"]) == (exact_max == 0)


def test_near_dedup_groups_chains_and_keeps_best_scored_member():
    vectors = unit_rows(50, dim=32, seed=2)
    vectors[1] = near_copy(vectors[0], 0.97, seed=1)  # 0 ~ 1
    vectors[2] = near_copy(vectors[1], 0.97, seed=2)  # 1 ~ 2: a chain joins 0, 1, 2 in one group
    pairs = [make_pair(f"p{k:02d}", f"prompt {k}", f"reply {k}", quality=0.5) for k in range(50)]
    pairs[2].quality = 0.8
    kept, stats = dedup_pairs(pairs, vectors, threshold=0.95)
    assert len(kept) == 48 and stats.near_removed == 2
    assert stats.groups == {"p02": ["p02", "p00", "p01"]}
    assert {pairs[k].dedup_group for k in (0, 1, 2)} == {"p02"}
    assert pairs[3].dedup_group is None
    assert [p.id for p in kept] == [p.id for p in pairs if p.id not in ("p00", "p01")]


def test_dedup_folds_exact_duplicates_into_near_duplicate_group():
    vectors = unit_rows(4, dim=16, seed=3)
    vectors[1] = vectors[0]  # exact textual duplicate of 0
    vectors[2] = near_copy(vectors[0], 0.98, seed=3)
    pairs = [
        make_pair("d", "Hi there", "Hello!", quality=0.3),
        make_pair("c", "hi there", "hello", quality=0.6),
        make_pair("b", "Hi there, friend", "Hello!", quality=0.5),
        make_pair("a", "Unrelated", "text", quality=0.1),
    ]
    kept, stats = dedup_pairs(pairs, vectors, threshold=0.95)
    assert [p.id for p in kept] == ["c", "a"]
    assert stats.exact_removed == 1 and stats.near_removed == 1
    assert stats.groups == {"c": ["c", "b", "d"]}
    assert [p.dedup_group for p in pairs] == ["c", "c", "c", None]
    assert stats.as_dict()["duplicate_groups"] == 1


def test_dedup_threshold_above_one_does_exact_only():
    vectors = unit_rows(3, dim=8, seed=4)
    vectors[1] = vectors[0]
    pairs = [make_pair(str(k), f"p{k}", "r") for k in range(3)]
    kept, stats = dedup_pairs(pairs, vectors, threshold=1.01)
    assert len(kept) == 3 and stats.near_removed == 0


def test_dedup_rejects_misaligned_embeddings():
    with pytest.raises(ValueError, match="2 embeddings for 3 pairs"):
        dedup_pairs([make_pair(str(k), "p", str(k)) for k in range(3)], unit_rows(2))
