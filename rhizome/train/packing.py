"""Sequence packing without contamination, and the batch tensors the loop feeds the model.

Rows: with packing, the epoch's sampled order is cut into consecutive windows of ``pack_window``
pairs and each window is bin-packed (best-fit decreasing) into rows of at most ``max_seq_length``
tokens. Weighted sampling happens first (it decides which pairs and how often), packing second (it
only decides which of those pairs share a row), so packing never changes what the epoch trains on,
and the order stays close to the sampled one (a pair moves at most within its window).

No attention across samples: a batch carries ``position_ids`` that restart at 0 for every sample in
a row and no attention mask. transformers then builds a block-diagonal causal mask from the restarts
(``masking_utils.find_packed_sequence_indices``), but only when no KV cache exists; SmolLM2's config
says ``use_cache=True``, so the forward must get ``use_cache=False`` or later samples silently attend
to earlier ones. Labels are next-token targets computed per sample (``TokenizedData.sample``), so no
sample is ever asked to predict the first token of the next.

Padding goes at the end of a row and continues the last sample's positions: causal attention means
no real token sees it, and a batch of single-sample rows keeps the fast plain-causal attention path.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import torch

from rhizome.train.data import IGNORE_INDEX, TokenizedData


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bins (lists of indices into ``lengths``) of total length <= ``capacity``; longest items placed first,
    each into the fullest bin that still has room."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted
    for i in order:
        size = int(lengths[i])
        if size > capacity:
            raise ValueError(f"sample of {size} tokens does not fit a row of {capacity}")
        slot = bisect.bisect_left(free, (size, -1))
        if slot == len(free):
            bins.append([i])
            bisect.insort(free, (capacity - size, len(bins) - 1))
        else:
            room, b = free.pop(slot)
            bins[b].append(i)
            bisect.insort(free, (room - size, b))
    return bins


def epoch_rows(order: np.ndarray, lengths: np.ndarray, *, capacity: int, packing: bool, window: int) -> list[list[int]]:
    """The epoch's rows, each a list of sample indices, from its sampled ``order``."""
    if not packing:
        return [[int(i)] for i in order]
    rows = []
    for start in range(0, len(order), max(1, window)):
        chunk = order[start:start + window]
        rows.extend([[int(chunk[j]) for j in row] for row in best_fit_decreasing(lengths[chunk], capacity)])
    return rows


def padded_efficiency(order: np.ndarray, lengths: np.ndarray, batch_size: int) -> float:
    """Real tokens / slots if the same order were batched one sample per row, padded to each batch's longest."""
    real = slots = 0
    for start in range(0, len(order), batch_size):
        chunk = lengths[order[start:start + batch_size]]
        real += int(chunk.sum())
        slots += int(chunk.max()) * len(chunk)
    return real / max(1, slots)


def collate(data: TokenizedData, rows: Sequence[Sequence[int]], pad_id: int) -> dict:
    """input_ids / position_ids / labels of shape [rows, longest row], plus token counts."""
    samples = [[data.sample(i) for i in row] for row in rows]
    width = max(sum(len(ids) for ids, _ in row) for row in samples)
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    labels = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
    positions = np.zeros((len(rows), width), dtype=np.int64)
    real = 0
    for r, row in enumerate(samples):
        at = 0
        for ids, target in row:
            n = len(ids)
            input_ids[r, at:at + n] = ids
            labels[r, at:at + n] = target
            positions[r, at:at + n] = np.arange(n)
            at += n
        real += at
        if at < width:  # padding continues the last sample's positions (see module docstring)
            last = positions[r, at - 1] + 1
            positions[r, at:] = np.arange(last, last + width - at)
    return {
        "input_ids": torch.from_numpy(input_ids), "position_ids": torch.from_numpy(positions),
        "labels": torch.from_numpy(labels), "real_tokens": real, "slots": len(rows) * width,
        "label_tokens": int((labels != IGNORE_INDEX).sum()),
    }
