"""torch.compile of the decoder layers: inductor's CPU backend turns each layer's chains of elementwise ops
(RMSNorm, RoPE, SiLU x up, residual adds, bf16 casts, their gradients) into a few fused C++ loops.

What is compiled: every decoder layer, with dynamic shapes (packed rows vary in length from batch to batch, so
one graph serves them all) and the fused LoRA function of ``fused.py`` traced inside it (forward and
hand-written backward, so the adapter's casts and dropout mask fuse with the rest). The attention mask is built
outside the layers, by transformers, as in eager mode. Layers share one graph: their parameters are inputs of the
graph, not constants.

Exactness: ``fallback_random`` keeps dropout's masks those of eager mode (the same seed gives the same masks), so
a resume stays step-exact; fusion only changes where bf16 results are rounded (inductor computes an elementwise
chain in fp32 and rounds once), which moves the loss by far less than bf16 itself does.

Cost: compilation is paid once per process, in setup (``compile_decoder_layers`` runs a forward and backward on a
small batch of the run's kind of rows, packed or not, so that a failure shows there and not mid-run). Inductor's
FX graph cache keeps the generated code on disk (``compile_cache_dir()``), so a resume or a second run of the same
model skips code generation and the C++ compiler. ``--compile auto`` trains eagerly: on this AVX512-BF16 CPU
(no AMX) the compiled step is slower, 8.62 s vs 8.12 s eager (0.94x; CPU time 0.95x), SmolLM2-135M bf16, 4 x 512,
3 interleaved steps in one process at a load average of 2.1 (``bench/train.py --ablate --variants 3 4``), with the
layers whole graphs (no graph breaks; only the expected recompilations). There is no gain to repay a compilation;
``--compile on`` compiles. If compilation fails (no C++ compiler, an unsupported Python or platform), a warning
says why and the run trains eagerly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from rhizome.device import cpu_has_bf16_matmul
from rhizome.log import get_logger
from rhizome.train.model import decoder_and_head, models_dir

log = get_logger(__name__)

def compile_cache_dir() -> Path:
    """Inductor's on-disk cache, beside the models cache (TORCHINDUCTOR_CACHE_DIR wins when set)."""
    return Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or models_dir().parent / "torch-compile")


def compile_wanted(setting: str) -> tuple[bool, str]:
    """(compile?, why) for --compile ``setting`` ("auto", "on", "off")."""
    if setting == "on":
        return True, "on"
    if setting == "off":
        return False, "off"
    # Measured slower, not faster, on a whole step (0.94x, see the docstring): nothing for a compilation to repay.
    return False, "auto: not measured faster than eager here (--compile on to use it)"


def configure_compiler() -> None:
    """The settings of dynamo and inductor that compiled training relies on (process-wide)."""
    import torch._dynamo
    import torch._inductor.config
    import torch.fx.experimental._config

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache_dir()))
    torch._inductor.config.fallback_random = True  # dropout masks drawn as in eager mode
    # Without duck sizing a row length that happens to equal a model dimension (head_dim, kv heads) is not
    # specialised to it, so one graph serves every length.
    torch.fx.experimental._config.use_duck_shape = False
    # Distinct graphs a layer legitimately needs: with and without a packed-rows mask, first layer (its input needs
    # no gradient) and the others, training and no-grad evaluation, and a batch of one row: 16.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 16)


def _layers(model: nn.Module) -> nn.ModuleList:
    decoder, _ = decoder_and_head(model)
    return next(child for child in decoder.children() if isinstance(child, nn.ModuleList))


def _warmup_batch(packed: bool, rows: int) -> dict:
    # A graph compiled for 2 rows serves any number but 1, which dynamo specialises: runs of 1-row batches warm that.
    rows = min(rows, 2)
    ids = torch.arange(16 * rows, dtype=torch.long).reshape(rows, 16)  # any valid token ids: only shapes matter
    # Two samples a row take transformers' block-diagonal mask, one sample a row plain causal attention.
    positions = torch.cat([torch.arange(9), torch.arange(7)]) if packed else torch.arange(16)
    return {"input_ids": ids, "position_ids": positions.expand(rows, 16).contiguous(), "labels": ids}


def compile_decoder_layers(model: nn.Module, forward: Callable[[dict], torch.Tensor], packed: bool,
                           rows: int) -> float | None:
    """Put every decoder layer of ``model`` through torch.compile and compile now, by running ``forward`` (a batch
    dict to the summed loss) and backward on a small batch like the run's (``packed`` rows or not, ``rows`` a batch):
    the graphs its batches take; a batch of another kind (rare) compiles its own the first time. Returns the seconds
    it took, or None (with a warning, every layer back to eager) when compilation fails."""
    import torch._dynamo

    configure_compiler()
    layers = _layers(model)
    started = time.perf_counter()
    model.train()
    # An earlier compilation in this process (a second run, a test) left errors suppressed: the warm-up must see them.
    torch._dynamo.config.suppress_errors = False
    try:
        for layer in layers:
            layer.compile(dynamic=True)
        forward(_warmup_batch(packed, rows)).backward()
    except Exception as exc:  # noqa: BLE001 - any compiler failure (toolchain, platform, tracing) means: run eagerly
        for layer in layers:
            layer._compiled_call_impl = None
        torch._dynamo.reset()
        log.warning("torch.compile of the decoder layers failed, training without it (--compile off hides this): "
                    "%s: %s", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return None
    finally:
        model.zero_grad(set_to_none=True)
    # From now on a graph that fails to compile (evaluation's no-grad variant, a one-row batch) runs eagerly, with
    # a warning, rather than stopping the run; not before, so that a failure above is seen and reported.
    torch._dynamo.config.suppress_errors = True
    return time.perf_counter() - started


def compile_for_run(setting: str, model: nn.Module, forward: Callable[[dict], torch.Tensor], *, packed: bool,
                    rows: int = 2) -> tuple[float | None, str]:
    """Compile the decoder layers if --compile ``setting`` asks for it here: (seconds it took or None, what was done,
    for the run's summary)."""
    wanted, why = compile_wanted(setting)
    if not wanted:
        return None, f"off ({why})"
    seconds = compile_decoder_layers(model, forward, packed, rows)
    if seconds is None:
        return None, "failed (see the warning above), eager"
    return seconds, f"decoder layers compiled in {seconds:.0f} s ({why}; cache {os.environ['TORCHINDUCTOR_CACHE_DIR']})"
