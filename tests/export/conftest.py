"""A tiny random Llama with a tiny byte-level BPE tokenizer, a LoRA adapter with non-zero B weights laid out as a
training run, and one export of it shared by the tests."""

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RHIZOME_NO_PROGRESS", "1")

# Grouped-query attention (4 query heads, 2 key/value heads) so the GGUF row permutation is exercised both ways.
TINY = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
CORPUS = ["Bees build comb from wax and store honey in cells.", "A strong colony swarms in spring, 2025 or not.",
          "Split a hive: move the queen, 3 frames of brood and 2 of stores.", "What is varroa? How do I treat it?"]


def tiny_tokenizer():
    """A byte-level BPE of ~300 tokens with SmolLM2's special tokens and ChatML template.

    The shipped SmolLM2 vocabulary (49,152 tokens, 48,900 merges) would work too, but reading it back from
    GGUF takes transformers' pure-Python reader about 20 s per load.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|im_end|>", unk_token="<|endoftext|>")
    tokenizer.chat_template = CHATML
    return tokenizer


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A Llama of 2 layers of width 64 with random weights (tied embeddings, as SmolLM2) and the tiny tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2, pad_token_id=2,
                         tie_word_embeddings=True, rope_theta=100000.0, max_position_embeddings=2048, **TINY)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    folder = tmp_path_factory.mktemp("tiny-base")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_run(tiny_base, tmp_path_factory) -> Path:
    """A run folder as train_script.py leaves it: training_config.json naming the base, final/ with the adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero, which would make the adapter a no-op
                param.normal_(0, 0.2)
    run = tmp_path_factory.mktemp("tiny-finetuned")
    model.save_pretrained(run / "final")
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(run / "final")
    (run / "training_config.json").write_text(json.dumps({"model": str(tiny_base), "quantization": "none"}))
    return run


@pytest.fixture(scope="session")
def exported(tiny_run, tmp_path_factory):
    """One export of the tiny run (merged folder + f32 GGUF, verified): shared by the tests that inspect it."""
    from rhizome.export.config import ExportConfig
    from rhizome.export.pipeline import run

    output = tmp_path_factory.mktemp("export") / "merged"
    return run(ExportConfig(adapter=str(tiny_run), output=str(output), gguf_type="f32"))
