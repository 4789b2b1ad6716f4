"""Loss only on assistant tokens: the mask built from SmolLM2's chat template, and the JSONL checks."""

import json

import numpy as np
import pytest

from rhizome.train.data import IGNORE_INDEX, DatasetFileError, load_pairs, tokenize_pairs

CONVERSATION = [
    {"role": "system", "content": "You keep bees."},
    {"role": "user", "content": "When do I add a super?"},
    {"role": "assistant", "content": "When seven of ten frames are covered."},
    {"role": "user", "content": "And in autumn?"},
    {"role": "assistant", "content": "Take it off and feed syrup."},
]


def _pair(messages, **extra):
    return {"id": "p", "messages": messages, "themes": ["bees"], "theme_weight": 1.0, **extra}


def _target_text(tokenizer, data, i=0):
    start, end = data.offsets[i], data.offsets[i + 1]
    ids = np.asarray(data.tokens[start:end])
    mask = np.asarray(data.targets[start:end])
    return tokenizer.decode(ids[mask].tolist()), tokenizer.decode(ids[~mask].tolist())


def test_only_the_reply_and_its_end_of_turn_carry_loss(tokenizer):
    data = tokenize_pairs([_pair(CONVERSATION)], tokenizer, max_seq_length=512)
    trained, masked = _target_text(tokenizer, data)
    assert trained == "Take it off and feed syrup.<|im_end|>"
    for context in ("You keep bees.", "When do I add a super?", "When seven of ten frames are covered.",
                    "And in autumn?", "<|im_start|>assistant\n"):
        assert context in masked


def test_every_assistant_turn_with_loss_on_all(tokenizer):
    data = tokenize_pairs([_pair(CONVERSATION)], tokenizer, max_seq_length=512, loss_on="all")
    trained, masked = _target_text(tokenizer, data)
    assert trained == "When seven of ten frames are covered.<|im_end|>Take it off and feed syrup.<|im_end|>"
    assert "When do I add a super?" in masked and "You keep bees." in masked


def test_labels_are_the_next_token_at_masked_positions_only(tokenizer):
    data = tokenize_pairs([_pair(CONVERSATION)], tokenizer, max_seq_length=512)
    ids, labels = data.sample(0)
    carries = labels != IGNORE_INDEX
    assert carries.sum() == data.label_count(0) > 0
    np.testing.assert_array_equal(labels[:-1][carries[:-1]], ids[1:][carries[:-1]])
    assert tokenizer.decode(labels[carries].tolist()) == "Take it off and feed syrup.<|im_end|>"
    assert labels[-1] == IGNORE_INDEX


def test_template_default_system_prompt_is_context_not_target(tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    data = tokenize_pairs([_pair(messages)], tokenizer, max_seq_length=512)
    trained, masked = _target_text(tokenizer, data)
    assert trained == "Hello!<|im_end|>"
    assert "SmolLM" in masked  # the template inserts its own system turn


def test_truncation_drops_pairs_left_without_a_target(tokenizer):
    long_prompt = [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "Short answer."}]
    data = tokenize_pairs([_pair(CONVERSATION), _pair(long_prompt, id="long")], tokenizer, max_seq_length=128)
    assert len(data) == 1 and data.stats["dropped_no_target"] == 1
    assert data.lengths.max() <= 128


def test_long_context_loses_its_oldest_turns_before_the_reply_is_cut(tokenizer):
    long_context = [CONVERSATION[0], {"role": "user", "content": "Tell me about varroa. " * 20},
                    {"role": "assistant", "content": "Mites. " * 60}, *CONVERSATION[1:]]
    data = tokenize_pairs([_pair(long_context)], tokenizer, max_seq_length=128)
    assert data.stats["context_trimmed"] == 1 and data.stats["truncated"] == 0 and len(data) == 1
    trained, masked = _target_text(tokenizer, data)
    assert trained == "Take it off and feed syrup.<|im_end|>"
    assert "You keep bees." in masked and "When do I add a super?" in masked and "varroa" not in masked

    untrimmed = tokenize_pairs([_pair(long_context)], tokenizer, max_seq_length=200, loss_on="all")
    assert untrimmed.stats["context_trimmed"] == 0 and untrimmed.stats["truncated"] == 1


def test_bad_lines_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "dataset_train.jsonl"
    good = json.dumps(_pair(CONVERSATION))
    path.write_text(good + "\n" + json.dumps({"id": "x", "messages": [{"role": "bot", "content": "hi"}]}) + "\n")
    with pytest.raises(DatasetFileError, match=r"dataset_train.jsonl:2: .*role"):
        load_pairs(path)
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "only a question"}]}) + "\n")
    with pytest.raises(DatasetFileError, match="no assistant message"):
        load_pairs(path)
    with pytest.raises(DatasetFileError, match="data_formatter.py"):
        load_pairs(tmp_path / "missing.jsonl")


def test_fixture_files_load(data_dir):
    pairs = load_pairs(data_dir / "dataset_train.jsonl")
    assert len(pairs) == 48 and all(p["themes"] and p["theme_weight"] > 0 for p in pairs)
