"""Loss, perplexity and next-token accuracy on assistant tokens, per pair, then summed over any group of pairs.

Pairs are tokenised exactly as training tokenises them (``rhizome.train.data.tokenize_pairs``: the
model's chat template, targets on the assistant reply only) and batched with training's ``collate``
(one pair per row, padding at the end, no attention mask, ``use_cache=False``), so an adapter's loss
here is the loss its training minimised. Every metric is token-weighted: a group's loss is the sum of
the cross-entropy over all its assistant tokens divided by their number, and its perplexity is
``exp(loss)``; pairs with long replies weigh more than short ones, as in the training loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rhizome.log import progress
from rhizome.train.data import IGNORE_INDEX, TokenizedData
from rhizome.train.model import decoder_and_head
from rhizome.train.packing import collate

# Positions sent through the LM head at once: 1024 x a 49k vocabulary = 200 MB of fp32 logits.
HEAD_CHUNK = 1024


@dataclass
class PairScores:
    """Per test pair: summed cross-entropy (nats), correctly predicted tokens, scored tokens."""

    loss_sum: np.ndarray  # float64
    correct: np.ndarray  # int64
    tokens: np.ndarray  # int64

    def summarize(self, indices: Sequence[int] | None = None) -> dict:
        """{"loss", "perplexity", "token_accuracy", "tokens", "pairs"} over ``indices`` (all pairs by default);
        the three rates are None for a group without tokens."""
        idx = np.arange(len(self.tokens)) if indices is None else np.asarray(indices, dtype=np.int64)
        tokens = int(self.tokens[idx].sum())
        if tokens == 0:
            return {"loss": None, "perplexity": None, "token_accuracy": None, "tokens": 0, "pairs": len(idx)}
        loss = float(self.loss_sum[idx].sum()) / tokens
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)),
                "token_accuracy": int(self.correct[idx].sum()) / tokens, "tokens": tokens, "pairs": len(idx)}


@torch.no_grad()
def score_pairs(model, data: TokenizedData, pad_id: int, device: torch.device | str, batch_size: int = 8,
                desc: str = "evaluating") -> PairScores:
    """Score every pair of ``data`` with ``model`` (a causal LM, plain or a PeftModel)."""
    model.eval()
    decoder, head = decoder_and_head(model)
    n = len(data)
    loss_sum = np.zeros(n, dtype=np.float64)
    correct = np.zeros(n, dtype=np.int64)
    tokens = np.zeros(n, dtype=np.int64)
    # Longest first: pairs of similar length share a batch (little padding), and a batch too big for
    # memory fails at the start rather than after minutes.
    order = np.argsort(-data.lengths, kind="stable")
    bar = progress(desc=desc, total=n, unit="pair")
    for start in range(0, n, max(1, batch_size)):
        rows = order[start:start + batch_size]
        batch = collate(data, [[int(i)] for i in rows], pad_id)
        labels = batch["labels"].to(device)
        hidden = decoder(input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device),
                         use_cache=False).last_hidden_state
        keep = labels != IGNORE_INDEX
        row_of = keep.nonzero()[:, 0]
        states, targets = hidden[keep], labels[keep]
        row_loss = torch.zeros(len(rows), dtype=torch.float64, device=device)
        row_correct = torch.zeros(len(rows), dtype=torch.int64, device=device)
        for lo in range(0, len(targets), HEAD_CHUNK):
            logits = head(states[lo:lo + HEAD_CHUNK]).float()
            target = targets[lo:lo + HEAD_CHUNK]
            where = row_of[lo:lo + HEAD_CHUNK]
            row_loss.index_add_(0, where, F.cross_entropy(logits, target, reduction="none").double())
            row_correct.index_add_(0, where, (logits.argmax(-1) == target).long())
        loss_sum[rows] = row_loss.cpu().numpy()
        correct[rows] = row_correct.cpu().numpy()
        tokens[rows] = keep.sum(1).cpu().numpy()
        bar.update(len(rows))
    bar.close()
    return PairScores(loss_sum, correct, tokens)
