"""ChatConfig flags and files, and which adapter the chat picks (and says it picked)."""

import json
import os

import pytest

from rhizome.chat.config import ChatConfig, find_adapter
from rhizome.config import parse_args
from rhizome.errors import UserError
from rhizome.train.config import DEFAULT_MODEL


def adapter(root, run, base, mtime, with_training_config=True):
    final = root / run / "final"
    final.mkdir(parents=True)
    (final / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": f"/cache/models/{base}"}))
    if with_training_config:
        (root / run / "training_config.json").write_text(json.dumps({"model": base}))
    os.utime(final / "adapter_config.json", (mtime, mtime))
    return final


def test_defaults_flags_and_config_file(tmp_path):
    config, _ = parse_args(ChatConfig, "chat", [])
    assert config == ChatConfig() and config.base_model == DEFAULT_MODEL and config.host == "127.0.0.1"
    assert config.remember and not config.share and config.adapter == "auto"
    settings = tmp_path / "chat.json"
    settings.write_text(json.dumps({"k": 2, "voice": "bf_emma", "remember": False}))
    config, _ = parse_args(ChatConfig, "chat", ["--config", str(settings), "--k", "7", "--min-score", "0.5"])
    assert (config.k, config.voice, config.remember, config.min_score) == (7, "bf_emma", False, 0.5)
    assert parse_args(ChatConfig, "chat", ["--remember"])[0].remember


def test_auto_picks_the_newest_adapter_trained_on_the_base_model(tmp_path):
    adapter(tmp_path, "SmolLM2-135M-Instruct-finetuned", DEFAULT_MODEL, 1_000)
    newer = adapter(tmp_path, "mine-finetuned", "HuggingFaceTB/SmolLM2-135M-Instruct", 2_000,
                    with_training_config=False)  # only PEFT's record of the base: the converted local folder
    adapter(tmp_path, "qwen-finetuned", "Qwen/Qwen2.5-0.5B-Instruct", 3_000)
    path, why = find_adapter(ChatConfig(), root=tmp_path)
    assert path == str(newer)
    assert f"newest trained on {DEFAULT_MODEL}" in why and "2 other(s) ignored" in why


def test_auto_says_when_no_adapter_fits(tmp_path):
    path, why = find_adapter(ChatConfig(), root=tmp_path)
    assert path is None and "train_script.py" in why
    adapter(tmp_path, "qwen-finetuned", "Qwen/Qwen2.5-0.5B-Instruct", 3_000)
    path, why = find_adapter(ChatConfig(), root=tmp_path)
    assert path is None and "Qwen/Qwen2.5-0.5B-Instruct" in why and "--adapter" in why


def test_none_and_explicit_adapters(tmp_path):
    final = adapter(tmp_path, "x-finetuned", "Qwen/Qwen2.5-0.5B-Instruct", 1)
    assert find_adapter(ChatConfig(adapter="none"), root=tmp_path) == (
        None, f"No adapter (--adapter none): chatting with the base model {DEFAULT_MODEL}.")
    assert find_adapter(ChatConfig(adapter=str(final)), root=tmp_path)[0] == str(final)
    assert find_adapter(ChatConfig(adapter=str(final.parent)), root=tmp_path)[0] == str(final)  # the run folder
    with pytest.raises(UserError, match="adapter not found.*train_script.py"):
        find_adapter(ChatConfig(adapter=str(tmp_path / "missing")))
