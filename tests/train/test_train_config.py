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
