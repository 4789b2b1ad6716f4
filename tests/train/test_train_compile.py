"""--compile: compiled decoder layers train what eager layers train (same dropout masks, so a resume stays exact),
a second process takes the compiled code from the disk cache, a compiler that fails leaves a warning and an eager
run, and auto compiles only where it was measured to pay."""

import math

import pytest
import torch

from rhizome.train import compile as compile_module
from rhizome.train.compile import compile_wanted, configure_compiler
from rhizome.train.config import TrainConfig
from rhizome.train.fused import fuse_lora
from rhizome.train.loop import FineTune


def _recipe(tiny_model_dir, data_dir, tmp_path, name, setting):
    config = TrainConfig(model=str(tiny_model_dir), train_file=str(data_dir / "dataset_train.jsonl"),
                         validation_file="", output_dir=str(tmp_path / name), cache_dir=str(tmp_path / "cache"),
                         max_seq_length=256, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                         max_steps=3, learning_rate=1e-3, warmup_steps=0, lora_dropout=0.1, precision="bf16",
                         plots=False, threads=1, compile=setting, report_to=["none"])
    recipe = FineTune(config)
    recipe.setup()
    return recipe


def _lora(recipe) -> dict:
    return {n: p.detach().clone() for n, p in recipe.model.named_parameters() if p.requires_grad}


@pytest.fixture
def fresh_compiler(tmp_path, monkeypatch):
    """An empty inductor cache and no compiled code left in memory by an earlier test."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.slow
def test_compiled_layers_train_what_eager_layers_train_and_reuse_the_disk_cache(tiny_model_dir, data_dir, tmp_path,
                                                                                 fresh_compiler):
    from torch._dynamo.utils import counters

    eager = _recipe(tiny_model_dir, data_dir, tmp_path, "eager", "off")
    assert eager.compile_seconds is None
    eager_losses = [eager.train_step(i)["loss"] for i in range(3)]

    compiled = _recipe(tiny_model_dir, data_dir, tmp_path, "compiled", "on")
    assert compiled.compile_seconds is not None, compiled.compile_label
    assert all(layer._compiled_call_impl is not None for layer in compile_module._layers(compiled.model))
    compiled_losses = [compiled.train_step(i)["loss"] for i in range(3)]
    # Fusion moves bf16 roundings only. AdamW moves an entry whose gradient is near zero by about +-lr whichever
    # its sign, so a few entries of the adapter may differ by up to 2 x lr; nearly all must agree.
    torch.testing.assert_close(compiled_losses, eager_losses, rtol=1e-3, atol=0)
    expected = _lora(eager)
    for name, value in _lora(compiled).items():
        assert ((value - expected[name]).abs() <= 1e-4).float().mean() >= 0.98, name

    torch._dynamo.reset()  # what a new process (a resume) starts from: nothing compiled in memory
    counters.clear()
    again = _recipe(tiny_model_dir, data_dir, tmp_path, "again", "on")
    assert again.compile_seconds is not None
    assert counters["inductor"]["fxgraph_cache_hit"] > 0
    assert counters["inductor"]["fxgraph_cache_miss"] == 0


@pytest.mark.slow
def test_compiled_fused_lora_draws_eagers_dropout_masks(fresh_compiler):
    """Same seed, same masks, so the same gradients: what keeps a compiled run's resume exact."""
    from tests.train.test_train_fused import _grads, _peft_block

    eager, compiled = _peft_block(0.25), _peft_block(0.25)
    fuse_lora(eager)
    fuse_lora(compiled)
    configure_compiler()
    compiled.compile(dynamic=True)
    x = torch.randn(3, 10, 32)
    torch.manual_seed(7)
    expected = _grads(eager, x)
    torch.manual_seed(7)
    got = _grads(compiled, x)
    for want, have in zip(expected[:2], got[:2]):
        torch.testing.assert_close(have, want, atol=1e-5, rtol=1e-5)
    for name in expected[2]:
        torch.testing.assert_close(got[2][name], expected[2][name], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_a_compiler_that_fails_leaves_a_warning_and_an_eager_run(tiny_model_dir, data_dir, tmp_path, fresh_compiler,
                                                                 monkeypatch, caplog):
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (str(tmp_path / "no-such-c++"),))
    recipe = _recipe(tiny_model_dir, data_dir, tmp_path, "broken", "on")
    assert recipe.compile_seconds is None
    assert recipe.compile_label.startswith("failed")
    assert "torch.compile of the decoder layers failed, training without it" in caplog.text
    assert all(layer._compiled_call_impl is None for layer in compile_module._layers(recipe.model))
    assert math.isfinite(recipe.train_step(0)["loss"])


def test_auto_trains_eagerly_until_compiling_is_measured_faster():
    assert compile_wanted("auto") == (False, "auto: not measured faster than eager here (--compile on to use it)")
    assert compile_wanted("on")[0] and not compile_wanted("off")[0]
