"""The formatter's JSONL is TRL's conversational format: SFTTrainer takes it unchanged and trains a step."""

import shutil
from pathlib import Path

import pytest

from rhizome.format.pipeline import FormatConfig, run

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_sft_trainer_trains_on_the_train_split_unchanged(tmp_path):
    import datasets
    import trl
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from rhizome.train.model import DEFAULT_MODEL, resolve_model

    shutil.copy(ROOT / "samples" / "conversations2.json", tmp_path / "claude.json")
    run(FormatConfig(inputs=[str(tmp_path / "claude.json")], output_dir=str(tmp_path / "data"),
                     cache_dir=str(tmp_path / "cache"), input_memory_texts=str(tmp_path / "none.npy"),
                     semantic_mode="normal", enable_semantic_labeling=True))
    train = datasets.load_dataset("json", data_files=str(tmp_path / "data" / "dataset_train.jsonl"), split="train")

    path = resolve_model(DEFAULT_MODEL)  # SmolLM2's tokenizer and chat template, with a tiny random model
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path, num_hidden_layers=1, hidden_size=64, intermediate_size=128,
                                        num_attention_heads=2, num_key_value_heads=1)
    model = AutoModelForCausalLM.from_config(config)
    args = trl.SFTConfig(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=2,
                         max_length=128, bf16=False, gradient_checkpointing=False, report_to=[], use_cpu=True,
                         save_strategy="no", logging_steps=1)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    result = trainer.train()
    assert trainer.state.global_step == 1 and result.training_loss > 0
