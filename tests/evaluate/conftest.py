"""A tiny random SmolLM2-shaped model, a random LoRA adapter in a train_script.py-style run folder, and
hand-written train / test splits whose theme counts make the rare / common groups easy to predict."""

import json
from pathlib import Path

import pytest

# Training pairs per theme: bees 3, honey 3, spoke 2, wheel 1; reishi only appears in the test split.
TRAIN_THEMES = [["bees", "honey"], ["bees", "honey", "spoke"], ["bees", "honey"], ["spoke"], ["wheel"]]
TEST_THEMES = [["bees", "honey"], ["wheel"], ["bees", "reishi"], ["spoke"], []]
REPLIES = [
    "Check for eggs, sealed stores and how many frames the bees cover.",
    "True the wheel by tightening the spokes a quarter turn at a time.",
    "Reishi likes hardwood logs; bees ignore it entirely.",
    "Replace a broken spoke before the rim goes out of true.",
    "I do not know, but the shed manual might.",
]


def _write_split(path: Path, themes_of_pairs: list[list[str]]) -> None:
    rows = []
    for i, themes in enumerate(themes_of_pairs):
        messages = [{"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": f"Question {i} about {', '.join(themes) or 'nothing'}?"},
                    {"role": "assistant", "content": REPLIES[i % len(REPLIES)]}]
        rows.append({"id": f"{path.stem}-{i}", "messages": messages, "themes": themes, "theme_weight": 1.0,
                     "source": "test", "quality": 1.0})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="session")
def theme_lists() -> tuple[list[list[str]], list[list[str]]]:
    return TRAIN_THEMES, TEST_THEMES


@pytest.fixture(scope="session")
def eval_data(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("data_finetune")
    _write_split(folder / "dataset_train.jsonl", TRAIN_THEMES)
    _write_split(folder / "dataset_test.jsonl", TEST_THEMES)
    return folder / "dataset_train.jsonl", folder / "dataset_test.jsonl"


@pytest.fixture(scope="session")
def adapter_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A run folder as train_script.py leaves it: final/ (random, non-zero LoRA), training_config.json and
    theme_tracker_state.json."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rhizome.train.tracker import ThemeTracker

    run = tmp_path_factory.mktemp("runs") / "tiny-finetuned"
    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(run / "final")
    (run / "training_config.json").write_text(json.dumps({"model": str(tiny_model_dir)}), encoding="utf-8")
    tracker = ThemeTracker(TRAIN_THEMES)
    tracker.observe(TRAIN_THEMES[:3])
    (run / "theme_tracker_state.json").write_text(json.dumps(tracker.state_dict()), encoding="utf-8")
    return run


@pytest.fixture(scope="session")
def evaluation(eval_data, adapter_run, tmp_path_factory) -> tuple[dict, Path]:
    """One evaluation of base + adapter (base model read from the run's training_config.json)."""
    from rhizome.evaluate import EvalConfig, run

    train, test = eval_data
    out = tmp_path_factory.mktemp("eval-out")
    report = run(EvalConfig(adapters=[str(adapter_run)], test_file=str(test), train_file=str(train),
                            rare_max_pairs=2, output_dir=str(out), batch_size=2, force_cpu=True))
    return report, out
