"""Every setting of the original training_config is a flag and can come from a config file."""

import json

import pytest

from rhizome.config import build_parser, parse_args
from rhizome.train.config import DEFAULT_MODEL, TrainConfig

ORIGINAL_TRAINING_CONFIG = {
    "train_file": "data_finetune/dataset_train.jsonl", "output_dir": "./DeepSeek-R1-Distill-Qwen-1.5B-finetuned",
    "use_sequence_packing": True, "use_cache": True, "force_rebuild_cache": False, "use_theme_weighting": True,
    "num_train_epochs": 3, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 8,
    "learning_rate": 5e-5, "warmup_steps": 50, "logging_steps": 25, "save_steps": 150,
}


def test_the_original_training_config_loads_as_a_config_file(tmp_path):
    path = tmp_path / "training_config.json"
    path.write_text(json.dumps(ORIGINAL_TRAINING_CONFIG))
    config, _ = parse_args(TrainConfig, "", ["--config", str(path), "--lr", "1e-4"])
    assert config.per_device_train_batch_size == 8 and config.save_steps == 150
    assert config.learning_rate == 1e-4  # a flag overrides the file
    assert config.run_dir.name == "DeepSeek-R1-Distill-Qwen-1.5B-finetuned"


def test_defaults_and_switches():
    config, _ = parse_args(TrainConfig, "", [])
    assert config.model == DEFAULT_MODEL and config.train_file == "data_finetune/dataset_train.jsonl"
    assert config.run_dir.name == "SmolLM2-135M-Instruct-finetuned"
    assert config.save_steps == 150 and config.use_theme_weighting and config.use_sequence_packing
    config, _ = parse_args(TrainConfig, "", ["--no-theme-weighting", "--no-packing", "--fresh", "--force-rebuild-cache",
                                             "--quantization", "nf4", "--lora-r", "8"])
    assert not config.use_theme_weighting and not config.use_sequence_packing
    assert config.fresh and config.force_rebuild_cache and config.quantization == "nf4" and config.lora_r == 8
    with pytest.raises(SystemExit):
        parse_args(TrainConfig, "", ["--quantization", "int3"])


def test_help_lists_every_setting():
    text = build_parser(TrainConfig, "").format_help()
    for flag in ("--model", "--fresh", "--no-theme-weighting", "--packing", "--force-rebuild-cache", "--quantization",
                 "--lora-r", "--lora-alpha", "--lora-dropout", "--save-steps", "--eval-steps", "--save-total-limit",
                 "--theme-temperature", "--theme-weight-cap", "--config"):
        assert flag in text


@pytest.mark.parametrize("kind, bf16_matmul, cuda_bf16, precision, expected", [
    ("cpu", True, False, "auto", "bfloat16"),    # AVX512-BF16 / AMX: the frozen base in bf16
    ("cpu", False, False, "auto", "float32"),    # older CPUs emulate bf16, slower than fp32: fall back
    ("cuda", False, True, "auto", "bfloat16"),
    ("cuda", False, False, "auto", "float32"),   # a GPU without bf16 (pre-Ampere)
    ("mps", True, False, "auto", "float32"),
    ("cpu", False, False, "bf16", "bfloat16"),   # asked for: obeyed
    ("cpu", True, False, "fp32", "float32"),
])
def test_auto_precision_is_bf16_only_where_the_hardware_multiplies_bf16(monkeypatch, kind, bf16_matmul, cuda_bf16,
                                                                        precision, expected):
    from types import SimpleNamespace

    import torch

    from rhizome.train import loop

    monkeypatch.setattr(loop, "cpu_has_bf16_matmul", lambda: bf16_matmul)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    recipe = SimpleNamespace(config=SimpleNamespace(precision=precision), device=SimpleNamespace(kind=kind))
    assert loop.FineTune._compute_dtype(recipe) == getattr(torch, expected)
