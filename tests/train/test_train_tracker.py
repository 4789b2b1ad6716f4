"""Theme diversity: coverage, entropy and counts, restorable from their JSON state."""

import math

import pytest

from rhizome.train.tracker import ThemeTracker


def test_coverage_and_entropy_follow_what_was_seen():
    tracker = ThemeTracker([["bees", "honey"], ["bees"], ["mushrooms"], ["ulysses"]])
    assert tracker.coverage == 0 and tracker.entropy == 0
    tracker.observe([["bees"], ["honey"]])
    assert tracker.coverage == pytest.approx(0.5)
    assert tracker.entropy == pytest.approx(math.log(2))
    tracker.observe([["mushrooms"], ["ulysses"]])
    assert tracker.coverage == 1.0 and tracker.entropy == pytest.approx(math.log(4))


def test_state_round_trips():
    tracker = ThemeTracker([["a"], ["b"], ["c"]])
    tracker.observe([["a"], ["a"], ["b"]])
    tracker.observe_eval([["c"], ["a"]])
    restored = ThemeTracker([["a"], ["b"], ["c"]])
    restored.load_state_dict(tracker.state_dict())
    assert restored.summary() == tracker.summary()
    assert tracker.state_dict()["seen_counts"] == {"a": 2, "b": 1}
    assert tracker.summary()["eval_themes"] == 2
