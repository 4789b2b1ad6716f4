"""Theme-weighted sampling: follows theme_weight (capped, tempered), reproducible by seed and epoch."""

import numpy as np
import pytest

from rhizome.train.sampler import ThemeWeightedSampler, sampling_probabilities


def test_pairs_are_drawn_in_proportion_to_their_theme_weight():
    weights = np.array([1.0, 1.0, 2.0, 4.0])
    sampler = ThemeWeightedSampler(np.tile(weights, 500), seed=0, cap=0)
    counts = np.zeros(4)
    for epoch in range(5):
        np.add.at(counts, sampler.epoch_order(epoch) % 4, 1)
    np.testing.assert_allclose(counts / counts.sum(), weights / weights.sum(), atol=0.01)


def test_same_seed_and_epoch_give_the_same_order_and_epochs_differ():
    weights = np.random.default_rng(1).uniform(0.5, 5, 200)
    a = ThemeWeightedSampler(weights, seed=7)
    b = ThemeWeightedSampler(weights, seed=7)
    np.testing.assert_array_equal(a.epoch_order(3), b.epoch_order(3))
    assert not np.array_equal(a.epoch_order(0), a.epoch_order(1))
    assert not np.array_equal(a.epoch_order(0), ThemeWeightedSampler(weights, seed=8).epoch_order(0))


def test_cap_limits_a_single_rare_theme_and_temperature_flattens():
    weights = np.array([1.0] * 99 + [1000.0])
    capped = sampling_probabilities(weights, cap=10)
    assert capped[-1] == pytest.approx(10 / 109)
    assert sampling_probabilities(weights, cap=0)[-1] > 0.9
    hot = sampling_probabilities(np.array([1.0, 4.0]), temperature=2.0, cap=0)
    np.testing.assert_allclose(hot, [1 / 3, 2 / 3])


def test_without_theme_weighting_an_epoch_is_a_permutation():
    sampler = ThemeWeightedSampler(np.array([1.0, 50.0, 3.0, 0.1] * 10), seed=0, weighted=False)
    assert sorted(sampler.epoch_order(0).tolist()) == list(range(40))
    assert sampler.is_uniform and sampler.effective_samples() == pytest.approx(40)


def test_identical_weights_are_uniform():
    sampler = ThemeWeightedSampler(np.ones(10), seed=0)
    assert sampler.is_uniform
