"""The fused step: LoRA as one autograd function and the chunked LM-head cross-entropy compute what PEFT and
F.cross_entropy compute (values and gradients), and a bf16 run keeps its frozen base in bf16."""

import copy

import pytest
import torch
from torch import nn

from rhizome.train import fused
from rhizome.train.config import TrainConfig
from rhizome.train.fused import fuse_lora, linear_cross_entropy
from rhizome.train.loop import FineTune, Speedups


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(32, 48, bias=False)
        self.down = nn.Linear(48, 32, bias=True)

    def forward(self, x):
        return self.down(nn.functional.silu(self.up(x)))


def _peft_block(dropout: float):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = _Block()
    for param in base.parameters():
        param.requires_grad_(False)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["up", "down"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero, which would hide errors in A's gradient
                param.normal_(0, 0.1)
    return model.train()


def _grads(model, x):
    model.zero_grad()
    x = x.clone().requires_grad_()
    out = model(x)
    out.square().sum().backward()
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_fused_lora_equals_peft_without_dropout():
    model = _peft_block(0.0)
    x = torch.randn(3, 10, 32)
    expected = _grads(model, x)
    fused_model = copy.deepcopy(model)
    assert fuse_lora(fused_model) == 2
    got = _grads(fused_model, x)
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], expected[1], atol=1e-5, rtol=1e-5)
    for name in expected[2]:
        torch.testing.assert_close(got[2][name], expected[2][name], atol=1e-5, rtol=1e-5)


def test_fused_lora_with_dropout_equals_peft_given_the_same_masks():
    p = 0.25
    model = _peft_block(p)
    x = torch.randn(3, 10, 32)
    torch.manual_seed(7)  # the fused forward draws one boolean mask per layer, in layer order
    masks = [torch.empty(30, width, dtype=torch.bool).bernoulli_(1 - p) for width in (32, 48)]
    layers = [model.base_model.model.up, model.base_model.model.down]
    calls = iter(masks)
    for layer in layers:  # PEFT's own forward, with its dropout replaced by the same masks
        layer.lora_dropout["default"] = _FixedDropout(calls, p)
    expected = _grads(model, x)

    fused_model = _peft_block(p)
    fuse_lora(fused_model)
    torch.manual_seed(7)
    got = _grads(fused_model, x)
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], expected[1], atol=1e-5, rtol=1e-5)
    for name in expected[2]:
        torch.testing.assert_close(got[2][name], expected[2][name], atol=1e-5, rtol=1e-5)

    fused_model.eval()  # evaluation: no dropout, plain PEFT output
    model.eval()
    for layer in layers:
        layer.lora_dropout["default"] = nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(fused_model(x), model(x), atol=1e-5, rtol=1e-5)


class _FixedDropout(nn.Module):
    def __init__(self, masks, p):
        super().__init__()
        self.masks, self.p = masks, p

    def forward(self, x):
        return x * next(self.masks).reshape(x.shape) / (1 - self.p)


def test_merged_adapters_take_peft_forward():
    model = _peft_block(0.0)
    fuse_lora(model)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        before = model(x)
        model.merge_adapter()
        torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rows", [7, fused.LOSS_CHUNK + 3])  # one chunk, and more than one
def test_linear_cross_entropy_equals_cross_entropy_and_its_gradient(rows):
    torch.manual_seed(0)
    hidden = torch.randn(rows, 16, requires_grad=True)
    weight = torch.randn(300, 16)
    labels = torch.randint(0, 300, (rows,))
    loss = linear_cross_entropy(hidden, weight, labels)
    (loss * 0.5).backward()
    got = hidden.grad.clone()
    hidden.grad = None
    expected = nn.functional.cross_entropy(hidden @ weight.t(), labels, reduction="sum")
    (expected * 0.5).backward()
    torch.testing.assert_close(loss, expected, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(got, hidden.grad, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        no_grad = linear_cross_entropy(hidden, weight, labels)
    torch.testing.assert_close(no_grad, expected.detach(), atol=1e-3, rtol=1e-5)


def _recipe(tiny_model_dir, data_dir, tmp_path, name, precision, speedups=Speedups()):
    config = TrainConfig(model=str(tiny_model_dir), train_file=str(data_dir / "dataset_train.jsonl"),
                         validation_file="", output_dir=str(tmp_path / name), cache_dir=str(tmp_path / "cache"),
                         max_seq_length=256, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                         max_steps=3, learning_rate=1e-3, warmup_steps=0, lora_dropout=0.1, precision=precision,
                         plots=False, threads=1)
    recipe = FineTune(config, speedups=speedups)
    recipe.setup()
    return recipe


def test_bf16_run_keeps_the_base_in_bf16_and_matches_fp32_and_autocast(tiny_model_dir, data_dir, tmp_path):
    runs = {"fp32": _recipe(tiny_model_dir, data_dir, tmp_path, "fp32", "fp32"),
            "bf16": _recipe(tiny_model_dir, data_dir, tmp_path, "bf16", "bf16"),
            "autocast": _recipe(tiny_model_dir, data_dir, tmp_path, "autocast", "bf16",
                                Speedups(bf16_weights=False, fused_lora=False, fused_loss=False))}
    bf16 = runs["bf16"].model
    assert bf16.get_base_model().model.layers[0].mlp.up_proj.base_layer.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in bf16.parameters() if p.requires_grad)
    assert "stored in bf16" in next(line for line in runs["bf16"].summary_lines if line.startswith("Device"))
    losses = {name: [recipe.train_step(i)["loss"] for i in range(3)] for name, recipe in runs.items()}
    for name in ("bf16", "autocast"):
        for got, want in zip(losses[name], losses["fp32"]):
            assert abs(got - want) <= 0.01 * want, (name, losses)
