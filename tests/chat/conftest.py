"""Fixtures shared by the chat tests: tiny random models with SmolLM2's tokenizer, and a small real memory."""

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHATS = [
    [{"role": "user", "content": "My bike chain skips under load on the big cog. What should I check?"},
     {"role": "assistant", "content": "Measure chain wear first: a stretched chain skips on worn cogs."}],
    [{"role": "user", "content": "How warm should the fruiting room be for oyster mushrooms?"},
     {"role": "assistant", "content": "Keep it around 15 to 20 °C with high humidity and fresh air."}],
]


@pytest.fixture(scope="session")
def make_tiny_model(tmp_path_factory):
    """Saves SmolLM2's config at 2 layers of width 32 with random weights (plus its tokenizer); returns the folder."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from rhizome.train.config import DEFAULT_MODEL
    from rhizome.train.model import resolve_model

    smol = resolve_model(DEFAULT_MODEL)

    def make(**overrides) -> str:
        config = AutoConfig.from_pretrained(smol)
        config.update({"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "head_dim": 8, **overrides})
        torch.manual_seed(0)
        folder = tmp_path_factory.mktemp("tiny-chat-model")
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
        AutoTokenizer.from_pretrained(smol).save_pretrained(folder)
        return str(folder)

    return make


@pytest.fixture(scope="session")
def tiny_chat_model_dir(make_tiny_model) -> str:
    return make_tiny_model()


@pytest.fixture(scope="session")
def small_memory_dir(tmp_path_factory):
    """The two conversations of CHATS as memory files, built by the real stage-2 code with the shipped embedder."""
    from rhizome.memory.build import EmbedConfig, build_memory

    folder = tmp_path_factory.mktemp("chat-memory")
    chats = folder / "chat.jsonl"
    chats.write_text("".join(json.dumps({"messages": m}) + "\n" for m in CHATS), encoding="utf-8")
    build_memory(EmbedConfig(inputs=[str(chats)], output_dir=str(folder), cache_dir=str(folder / "cache")))
    return folder
