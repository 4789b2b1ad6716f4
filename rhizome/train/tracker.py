"""Theme diversity: how much of the dataset's themes training has seen so far, and how evenly.

coverage  share of the training set's distinct themes seen at least once in a training batch
entropy   Shannon entropy (nats) of the seen-theme counts: higher = spread over more themes
counts    per-theme counts seen in training, next to the dataset's own counts

Evaluation batches are tracked the same way (coverage of the validation themes evaluated). The
state is plain JSON (``theme_tracker_state.json``), saved in every checkpoint and restored on resume.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable


def entropy(counts: Iterable[int]) -> float:
    values = [c for c in counts if c > 0]
    total = sum(values)
    return -sum(c / total * math.log(c / total) for c in values) if total else 0.0


class ThemeTracker:
    def __init__(self, dataset_themes: Iterable[Iterable[str]]):
        self.dataset_counts = Counter(t for themes in dataset_themes for t in themes)
        self.seen: Counter = Counter()
        self.eval_seen: Counter = Counter()

    def observe(self, themes_of_samples: Iterable[Iterable[str]]) -> None:
        for themes in themes_of_samples:
            self.seen.update(themes)

    def observe_eval(self, themes_of_samples: Iterable[Iterable[str]]) -> None:
        self.eval_seen = Counter(t for themes in themes_of_samples for t in themes)

    @property
    def coverage(self) -> float:
        if not self.dataset_counts:
            return 0.0
        return sum(1 for t in self.dataset_counts if self.seen[t]) / len(self.dataset_counts)

    @property
    def entropy(self) -> float:
        return entropy(self.seen.values())

    def summary(self) -> dict:
        return {
            "coverage": self.coverage, "entropy": self.entropy, "themes_seen": sum(1 for c in self.seen.values() if c),
            "dataset_themes": len(self.dataset_counts), "dataset_entropy": entropy(self.dataset_counts.values()),
            "eval_themes": len(self.eval_seen), "eval_entropy": entropy(self.eval_seen.values()),
        }

    def state_dict(self) -> dict:
        return {**self.summary(), "seen_counts": dict(self.seen.most_common()),
                "dataset_counts": dict(self.dataset_counts.most_common()),
                "eval_counts": dict(self.eval_seen.most_common())}

    def load_state_dict(self, state: dict) -> None:
        self.seen = Counter(state.get("seen_counts", {}))
        self.eval_seen = Counter(state.get("eval_counts", {}))
