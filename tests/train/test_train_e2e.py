"""End to end with the shipped SmolLM2-135M: train_script.py on a data_finetune/ folder, resume, load the adapter."""

import json

import pytest

import train_script

pytestmark = pytest.mark.slow

COMMAND = ["--max-steps", "2", "--max-seq-length", "128", "--batch-size", "2", "--grad-accum", "2",
           "--eval-samples", "4", "--save-steps", "1", "--logging-steps", "1", "--lr", "1e-3", "--warmup-steps", "0"]


def test_default_model_trains_resumes_and_its_adapter_loads(data_dir, monkeypatch, capsys, smol_dir):
    monkeypatch.chdir(data_dir.parent)
    assert train_script.main(COMMAND) == 0
    printed = capsys.readouterr().out
    assert "Model: SmolLM2-135M-Instruct" in printed and "Trained 2 of 2 steps" in printed

    run = data_dir.parent / "SmolLM2-135M-Instruct-finetuned"
    for name in ("adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                 "theme_tracker_state.json", "training_metrics.json", "training_plots.png", "loss_focused.png"):
        assert (run / "checkpoint-2" / name).exists(), name
    for name in ("train.log", "training_config.json", "training_plots.png", "final/README.md", "final/tokenizer.json"):
        assert (run / name).exists(), name
    assert json.loads((run / "training_config.json").read_text())["max_seq_length"] == 128
    assert list((data_dir / "tokenized_cache").iterdir())
    card = (run / "final" / "README.md").read_text()
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in card and "Validation loss" in card

    assert train_script.main(COMMAND) == 0  # the same command again: resumes, finds nothing left to do
    assert "already complete" in (run / "train.log").read_text()

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    best_step = json.loads((run / "final" / "training_metrics.json").read_text())["best"]["step"]
    assert best_step in (1, 2)
    for adapter in (run / "final", run / "checkpoint-2"):
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smol_dir), adapter)
        assert any("lora_B" in name and param.abs().sum() > 0 for name, param in model.named_parameters())
