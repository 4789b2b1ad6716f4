"""Tokenisation cache: a rerun loads it, a change to data, tokenizer template or max length rebuilds it."""

import numpy as np

from rhizome.train.cache import load_or_tokenize


def _load(path, tokenizer, cache, max_len=256, **kw):
    return load_or_tokenize(path, tokenizer, max_len, "last", cache_dir=cache, **kw)


def test_rerun_loads_the_cache_with_identical_arrays(tokenizer, data_dir):
    train = data_dir / "dataset_train.jsonl"
    cache = data_dir / "tokenized_cache"
    first, source = _load(train, tokenizer, cache)
    assert source == "tokenized and cached"
    second, source = _load(train, tokenizer, cache)
    assert source == "loaded from cache"
    np.testing.assert_array_equal(first.tokens, second.tokens)
    np.testing.assert_array_equal(first.targets, second.targets)
    assert first.ids == second.ids and first.themes == second.themes
    assert not list(cache.glob(".*"))  # no temporary folder left behind


def test_any_change_to_the_inputs_rebuilds(tokenizer, data_dir):
    train = data_dir / "dataset_train.jsonl"
    cache = data_dir / "tokenized_cache"
    _load(train, tokenizer, cache)
    assert _load(train, tokenizer, cache, max_len=128)[1] != "loaded from cache"
    assert _load(train, tokenizer, cache, force_rebuild=True)[1] != "loaded from cache"
    with open(train, "a") as handle:
        handle.write(train.read_text().splitlines()[0].replace('"train-000"', '"train-new"') + "\n")
    data, source = _load(train, tokenizer, cache)
    assert source != "loaded from cache" and len(data) == 49
    original = tokenizer.chat_template
    try:
        tokenizer.chat_template = original.replace("<|im_start|>", "<|im_start|> ")
        assert _load(train, tokenizer, cache)[1] != "loaded from cache"
    finally:
        tokenizer.chat_template = original
    assert _load(train, tokenizer, cache)[1] == "loaded from cache"


def test_an_unreadable_entry_is_rebuilt(tokenizer, data_dir):
    train = data_dir / "dataset_train.jsonl"
    cache = data_dir / "tokenized_cache"
    _load(train, tokenizer, cache)
    (entry,) = cache.iterdir()
    (entry / "tokens.npy").write_bytes(b"broken")
    data, source = _load(train, tokenizer, cache)
    assert source == "tokenized and cached" and len(data) == 48
