"""Packing: rows respect max_seq_length, and a packed batch gives exactly the loss of its samples run alone."""

import numpy as np
import pytest
import torch

from rhizome.train.cache import load_or_tokenize
from rhizome.train.data import IGNORE_INDEX
from rhizome.train.loop import CausalLMLoss
from rhizome.train.packing import best_fit_decreasing, collate, epoch_rows, padded_efficiency


def test_best_fit_decreasing_places_every_item_once_within_capacity():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=300)
    bins = best_fit_decreasing(lengths, 256)
    placed = sorted(i for b in bins for i in b)
    assert placed == list(range(300))
    assert all(sum(lengths[i] for i in b) <= 256 for b in bins)
    lower_bound = int(np.ceil(lengths.sum() / 256))
    assert len(bins) <= lower_bound * 1.05 + 1  # near-optimal on random lengths


def test_too_long_sample_is_an_error():
    with pytest.raises(ValueError, match="does not fit"):
        best_fit_decreasing([10, 300], 256)


def test_epoch_rows_pack_within_windows_and_keep_every_sample():
    lengths = np.array([100, 30, 200, 50, 120, 60, 10, 240])
    order = np.array([3, 1, 7, 0, 2, 6, 5, 4])
    rows = epoch_rows(order, lengths, capacity=256, packing=True, window=4)
    first_window = {3, 1, 7, 0}
    assert sorted(i for r in rows for i in r) == sorted(order.tolist())
    for row in rows:  # rows never mix samples from different windows
        assert set(row) <= first_window or not set(row) & first_window
    assert epoch_rows(order, lengths, capacity=256, packing=False, window=4) == [[int(i)] for i in order]


def test_packing_beats_padding_on_the_fixture(tokenizer, data_dir):
    data, _ = load_or_tokenize(data_dir / "dataset_train.jsonl", tokenizer, 256, "last", cache_dir=None)
    order = np.arange(len(data))
    rows = epoch_rows(order, data.lengths, capacity=256, packing=True, window=512)
    packed = data.lengths.sum() / (len(rows) * 256)
    assert packed > 0.9
    assert packed > padded_efficiency(order, data.lengths, batch_size=8)


def test_collate_restarts_positions_per_sample(tokenizer, data_dir):
    data, _ = load_or_tokenize(data_dir / "dataset_train.jsonl", tokenizer, 256, "last", cache_dir=None)
    batch = collate(data, [[0, 1, 2], [3]], pad_id=tokenizer.pad_token_id)
    n0, n1, n2, n3 = data.lengths[:4]
    positions = batch["position_ids"]
    assert positions[0, :n0].tolist() == list(range(n0))
    assert positions[0, n0:n0 + n1].tolist() == list(range(n1))
    assert positions[0, n0 + n1:n0 + n1 + n2].tolist() == list(range(n2))
    assert positions[1, :n3].tolist() == list(range(n3))
    # the last token of a sample never gets the next sample's first token as a label
    assert batch["labels"][0, n0 - 1] == IGNORE_INDEX and batch["labels"][0, n0 + n1 - 1] == IGNORE_INDEX
    assert batch["label_tokens"] == sum(data.label_count(i) for i in range(4))
    assert batch["real_tokens"] == n0 + n1 + n2 + n3


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(1)
    with torch.no_grad():  # larger random weights so that any leak between samples shows in the loss
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.normal_(0, 0.2)
    assert model.config.use_cache  # the trap is live in this config: the loss module must switch it off
    return model.eval()


def test_packed_loss_equals_token_weighted_loss_of_samples_run_alone(tiny_model, tokenizer, data_dir):
    data, _ = load_or_tokenize(data_dir / "dataset_train.jsonl", tokenizer, 256, "last", cache_dir=None)
    rows = best_fit_decreasing(data.lengths[:12], 256)
    assert any(len(r) >= 3 for r in rows)
    loss = CausalLMLoss(tiny_model)
    with torch.no_grad():
        packed = collate(data, rows, tokenizer.pad_token_id)
        packed_sum = loss(packed["input_ids"], packed["position_ids"], packed["labels"]).item()
        alone_sum = 0.0
        for i in range(12):
            one = collate(data, [[i]], tokenizer.pad_token_id)
            alone_sum += loss(one["input_ids"], one["position_ids"], one["labels"]).item()
    tokens = packed["label_tokens"]
    assert abs(packed_sum / tokens - alone_sum / tokens) <= 1e-4

    # The same packed batch through a forward that keeps a KV cache leaks across samples: the check above
    # is sensitive to the trap it guards against.
    with torch.no_grad():
        hidden = tiny_model.model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                                  use_cache=True).last_hidden_state
        keep = packed["labels"] != IGNORE_INDEX
        leaky = torch.nn.functional.cross_entropy(tiny_model.lm_head(hidden[keep]), packed["labels"][keep],
                                                  reduction="sum").item()
    assert abs(leaky / tokens - alone_sum / tokens) > 1e-2
