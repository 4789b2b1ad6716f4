"""The training loop in-process on a tiny model: outputs of a run, --fresh, settings guard, no validation split."""

import json

import pytest

from rhizome.train.config import TrainConfig
from rhizome.train.loop import FineTune, ResumeError


def _config(tiny_model_dir, data_dir, out, **overrides):
    values = dict(model=str(tiny_model_dir), train_file=str(data_dir / "dataset_train.jsonl"),
                  validation_file=str(data_dir / "dataset_validation.jsonl"), output_dir=str(out),
                  cache_dir=str(data_dir / "tokenized_cache"), max_seq_length=256, per_device_train_batch_size=2,
                  gradient_accumulation_steps=2, max_steps=4, learning_rate=3e-3, warmup_steps=1, save_steps=2,
                  lora_dropout=0.0, threads=1)
    return TrainConfig(**{**values, **overrides})


def _train(config):
    recipe = FineTune(config)
    recipe.setup()
    return recipe, recipe.train()


def test_a_run_writes_checkpoints_final_plots_metrics_and_its_config(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    recipe, result = _train(_config(tiny_model_dir, data_dir, out))
    assert result["steps"] == 4 and result["last_eval_loss"] < result["first_eval_loss"]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    for name in ("training_plots.png", "loss_focused.png", "theme_tracker_state.json", "training_metrics.json",
                 "training_config.json", "final/adapter_model.safetensors", "final/README.md", "final/tokenizer.json"):
        assert (out / name).exists(), name
    assert json.loads((out / "training_config.json").read_text())["learning_rate"] == 3e-3
    tracker = json.loads((out / "theme_tracker_state.json").read_text())
    assert tracker["coverage"] > 0.5 and tracker["entropy"] > 0 and tracker["seen_counts"]
    metrics = json.loads((out / "training_metrics.json").read_text())
    assert [e["step"] for e in metrics["eval"]] == [0, 2, 4]  # before training, then every checkpoint
    assert all(0 < m["packing_efficiency"] <= 1 and m["tokens_per_s"] > 0 for m in metrics["train"])
    assert metrics["best"]["step"] == 4
    assert any(line.startswith("Packing: on") for line in recipe.summary_lines)


def test_changed_settings_refuse_to_resume_and_fresh_starts_over(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    _train(_config(tiny_model_dir, data_dir, out, max_steps=2))
    with pytest.raises(ResumeError, match="learning_rate"):
        FineTune(_config(tiny_model_dir, data_dir, out, max_steps=2, learning_rate=1e-2)).setup()
    recipe, result = _train(_config(tiny_model_dir, data_dir, out, max_steps=2, learning_rate=1e-2, fresh=True))
    assert result["steps"] == 2 and len(recipe.history["train"]) == 2
    assert json.loads((out / "training_config.json").read_text())["learning_rate"] == 1e-2


def test_without_validation_the_final_adapter_is_the_last_one(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    config = _config(tiny_model_dir, data_dir, out, validation_file=str(tmp_path / "none.jsonl"), max_steps=2,
                     use_sequence_packing=False, use_theme_weighting=False, plots=False)
    recipe, result = _train(config)
    assert result["first_eval_loss"] is None and (out / "final" / "adapter_model.safetensors").exists()
    assert not (out / "best").exists()
    assert "padded to the longest" in next(line for line in recipe.summary_lines if line.startswith("Packing"))
