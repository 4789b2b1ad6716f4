"""Stage 4's tokenisation streamed and parallel: chunks written as they come, the same samples for any --workers."""

import itertools

import numpy as np
import pytest

from rhizome.train import data as train_data
from rhizome.train.cache import load_or_tokenize
from rhizome.train.data import iter_pairs, load_pairs, tokenize_pairs, tokenized_chunks


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 10 pairs, so the 48 fixture pairs make five and workers have something to share."""
    monkeypatch.setattr(train_data, "CHUNK_PAIRS", 10)


def test_the_cache_is_the_same_bytes_for_one_worker_and_two(tokenizer, data_dir, small_chunks):
    train = data_dir / "dataset_train.jsonl"
    entries = {}
    for workers in (1, 2):
        data, source = load_or_tokenize(train, tokenizer, 256, "last", cache_dir=data_dir / f"cache-{workers}",
                                        workers=workers)
        assert source == "tokenized and cached" and len(data) == 48
        (entry,) = (data_dir / f"cache-{workers}").iterdir()
        entries[workers] = {p.name: p.read_bytes() for p in sorted(entry.iterdir())}
    assert sorted(entries[1]) == ["offsets.npy", "samples.json", "targets.npy", "tokens.npy", "weights.npy"]
    assert entries[1] == entries[2]
    # ... and the same samples as tokenising the whole list in memory at once.
    whole = tokenize_pairs(load_pairs(train), tokenizer, 256)
    loaded, source = load_or_tokenize(train, tokenizer, 256, "last", cache_dir=data_dir / "cache-2")
    assert source == "loaded from cache" and loaded.ids == whole.ids and loaded.themes == whole.themes
    for name in ("tokens", "targets", "offsets", "weights"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(whole, name))
    assert loaded.stats == whole.stats


def test_a_new_entry_is_read_back_memory_mapped_not_held_in_memory(tokenizer, data_dir):
    data, source = load_or_tokenize(data_dir / "dataset_train.jsonl", tokenizer, 256, "last",
                                    cache_dir=data_dir / "cache")
    assert source == "tokenized and cached"
    assert isinstance(data.tokens, np.memmap) and isinstance(data.targets, np.memmap)


def test_pairs_are_read_a_chunk_at_a_time(tokenizer, data_dir, small_chunks):
    read = []

    def counted():
        for pair in iter_pairs(data_dir / "dataset_train.jsonl"):
            read.append(pair["id"])
            yield pair

    for workers in (1, 2):
        read.clear()
        chunks = tokenized_chunks(counted(), tokenizer, 256, workers=workers)
        first = next(chunks)
        assert len(first.ids) == 10
        assert len(read) <= 10 * 2 * workers  # the chunks in flight, not the file
        rest = list(chunks)
        assert len(read) == 48 and sum(len(c.ids) for c in [first, *rest]) == 48


def test_parallel_tokenisation_of_many_chunks_keeps_their_order(tokenizer, data_dir, small_chunks):
    pairs = load_pairs(data_dir / "dataset_train.jsonl")
    many = [dict(p, id=f"{p['id']}-{copy}") for copy, p in itertools.product(range(3), pairs)]
    one = tokenize_pairs(many, tokenizer, 128, workers=1)
    two = tokenize_pairs(many, tokenizer, 128, workers=2)
    assert two.ids == one.ids and two.stats == one.stats
    np.testing.assert_array_equal(two.tokens, one.tokens)
    np.testing.assert_array_equal(two.offsets, one.offsets)
