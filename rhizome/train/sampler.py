"""Theme-weighted sampling: which pairs an epoch trains on, and in what order.

The formatter gives each pair a ``theme_weight`` (high for pairs about rare themes). An epoch draws
as many pairs as the dataset holds, with replacement, with probability proportional to
``min(weight, cap * median) ** (1 / temperature)``: rare themes are seen more often, the cap keeps a
handful of one-off themes from taking over, and the temperature flattens (T > 1) or sharpens (T < 1)
the weighting. Without theme weighting an epoch is a plain permutation (every pair exactly once).

The order of epoch ``e`` comes from a generator seeded with ``(seed, e)`` alone, so it is the same in
every run and after a resume: the sampler's state is just (seed, epoch, position), stored in each
checkpoint.
"""

from __future__ import annotations

import numpy as np


def sampling_probabilities(weights: np.ndarray, temperature: float = 1.0, cap: float = 10.0) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    if len(weights) == 0:
        raise ValueError("no samples to weight")
    if temperature <= 0:
        raise ValueError("theme temperature must be > 0")
    positive = weights[weights > 0]
    if len(positive) == 0:
        return np.full(len(weights), 1.0 / len(weights))
    clipped = np.clip(weights, 0.0, cap * float(np.median(positive)) if cap > 0 else np.inf)
    scaled = clipped ** (1.0 / temperature)
    return scaled / scaled.sum()


class ThemeWeightedSampler:
    def __init__(self, weights: np.ndarray, *, seed: int, weighted: bool = True, temperature: float = 1.0,
                 cap: float = 10.0):
        self.size = len(weights)
        self.seed = seed
        self.weighted = weighted
        self.probabilities = (sampling_probabilities(weights, temperature, cap) if weighted
                              else np.full(self.size, 1.0 / self.size))

    @property
    def is_uniform(self) -> bool:
        return bool(np.allclose(self.probabilities, self.probabilities[0]))

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Indices of the pairs epoch ``epoch`` trains on, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        if not self.weighted:
            return rng.permutation(self.size)
        return rng.choice(self.size, size=self.size, replace=True, p=self.probabilities)

    def effective_samples(self) -> float:
        """Kish's effective sample size: how many distinct pairs the weighting is worth (== size when uniform)."""
        return float(1.0 / np.square(self.probabilities).sum())
