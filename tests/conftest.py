"""Fixtures shared across test folders: SmolLM2's tokenizer and config, and a tiny random model built from them."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RHIZOME_NO_PROGRESS", "1")

TINY = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """For the module's tests, base-model conversions (CTranslate2) go to a temporary models cache, not the
    user's."""
    folder = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RHIZOME_MODELS_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def smol_dir() -> str:
    """The default model as a Hugging Face folder (converted from the shipped GGUF once per machine)."""
    from rhizome.train.config import DEFAULT_MODEL
    from rhizome.train.model import resolve_model

    return resolve_model(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def tokenizer(smol_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(smol_dir, tokenizer, tmp_path_factory) -> Path:
    """SmolLM2's config (vocabulary, rope, use_cache=True ...) with 2 layers of width 64, random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(smol_dir)
    config.update(TINY)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    folder = tmp_path_factory.mktemp("tiny-smollm2")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
