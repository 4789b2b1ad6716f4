"""QLoRA on the CPU: 4-bit NF4 base, and LoRA gradients still flow after an evaluation pass.

bitsandbytes 0.50 on a CPU with AVX512-BF16 repacks 4-bit weights on the first no-grad eval-mode
forward; after that, gradients silently stop reaching the LoRA layers. The set-up must prevent it.
"""

import pytest
import torch

from rhizome.train.loop import CausalLMLoss
from rhizome.train.model import LoraSetup, apply_lora, bitsandbytes_works, load_base_model

pytestmark = pytest.mark.skipif(not bitsandbytes_works("cpu")[0], reason="bitsandbytes 4-bit does not work here")


def _lora_grads(model, kind):
    return [p.grad for n, p in model.named_parameters() if p.requires_grad and f"lora_{kind}" in n]


def test_lora_gradients_are_non_zero_after_an_evaluation_pass(tiny_model_dir):
    base = load_base_model("tiny", str(tiny_model_dir), "nf4", "cpu", torch.float32)
    assert any(type(m).__name__ == "Linear4bit" for m in base.modules())
    torch.manual_seed(0)
    model = apply_lora(base, LoraSetup(r=4, alpha=8, dropout=0.0), "nf4")
    loss = CausalLMLoss(model)
    ids = torch.randint(0, 49152, (2, 24))
    positions = torch.arange(24).expand(2, -1)
    labels = torch.roll(ids, -1, 1)

    model.eval()
    with torch.no_grad():  # what evaluation (or a sample generation) does before training
        loss(ids, positions, labels)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # after one step lora_B != 0, so lora_A gets gradient too
        optimizer.zero_grad()
        loss(ids, positions, labels).backward()
        grads_b = _lora_grads(model, "B")
        assert grads_b and all(g is not None and g.abs().sum() > 0 for g in grads_b)
        optimizer.step()
    assert all(g is not None and g.abs().sum() > 0 for g in _lora_grads(model, "A"))
