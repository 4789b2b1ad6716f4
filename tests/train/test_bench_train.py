"""bench/train.py's QLoRA anchors: the Trainer + PEFT rows measure the same 4-bit NF4 base and adapters that
ours-qlora trains, not a full-precision model, and they train."""

import argparse
import json

import pytest
import torch

from bench.train import _hf, hf_model, make_pairs
from rhizome.train.model import bitsandbytes_works


@pytest.mark.skipif(not bitsandbytes_works("cpu")[0], reason="bitsandbytes 4-bit does not work here")
@pytest.mark.parametrize("name", ["trainer-grouped-qlora", "trainer-grouped-bf16-qlora"])
def test_the_qlora_anchors_train_a_4bit_base_with_our_adapters(tiny_model_dir, tmp_path, name):
    model, lora = hf_model(name, str(tiny_model_dir))
    assert lora is None  # the adapters are already in place, as ours-qlora has them
    import bitsandbytes as bnb

    four_bit = [n for n, m in model.named_modules() if type(m) is bnb.nn.Linear4bit]
    assert len(four_bit) == 2 * 7  # every projection of both layers
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(pair) + "\n" for pair in make_pairs(8)))
    args = argparse.Namespace(model=str(tiny_model_dir), data=str(data), tmp=str(tmp_path), max_seq_length=64,
                              batch_size=2, steps=1)
    timings, _ = _hf(name, args)
    assert len(timings) == 2 and all(seconds > 0 and tokens > 0 for seconds, tokens, _ in timings)


def test_the_plain_anchors_get_full_precision_weights_and_a_lora_config(tiny_model_dir):
    model, lora = hf_model("trainer-grouped-bf16", str(tiny_model_dir))
    assert lora is not None and lora.r == 16 and set(lora.target_modules) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert all(p.dtype == torch.float32 for p in model.parameters())
