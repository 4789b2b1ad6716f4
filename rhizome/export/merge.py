"""Find an adapter and its base, merge the LoRA weights into the base, and compare the two.

Merging runs on the CPU in fp32: it touches every weight once (seconds for a 135M model), RAM is usually
larger than GPU memory, and fp32 keeps ``W + scale * B @ A`` from rounding before the result is saved.
A base that is itself quantised (a bitsandbytes / GPTQ / AWQ checkpoint) is refused: folding LoRA deltas
into 4-bit weights rounds them away, and peft's advice is to merge over the unquantised base. An adapter
trained as QLoRA (our NF4 base loaded on the fly) is merged over that unquantised base as peft recommends;
its outputs then differ slightly from the 4-bit base + adapter it was trained with, and the summary says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from rhizome.errors import UserError
from rhizome.log import get_logger
from rhizome.runs import ADAPTER_CONFIG_FILE, Run, newest_adapter, resolve_adapter
from rhizome.train.config import DEFAULT_MODEL
from rhizome.train.model import ModelNotFoundError, resolve_model

log = get_logger(__name__)

VERIFY_PROMPT = "What are the first steps when starting something new?"


class ExportError(UserError, RuntimeError):
    """A problem the user can fix (missing adapter, quantised base ...): reported without a traceback."""


@dataclass
class AdapterInfo:
    path: Path               # the folder with adapter_config.json
    run_dir: Path | None     # the training run it belongs to, when there is one
    base_name: str           # as given (Hugging Face id, folder or .gguf)
    base_path: str           # a local folder (or id) transformers can load
    lora: dict               # adapter_config.json
    qlora: bool              # trained over a 4-bit NF4 base
    base_dtype: torch.dtype  # what the base's weights are stored in


def find_adapter(given: str, cwd: Path | None = None, base_model: str = "") -> tuple[Path, Run | None]:
    """(adapter folder, its run) for ``given`` (an adapter or run folder), or, when empty, the newest adapter in
    ``cwd`` trained on ``base_model`` (the shipped model when empty): the rule of ``rhizome.runs.newest_adapter``."""
    if given:
        return resolve_adapter(given)
    path, why = newest_adapter(cwd or Path.cwd(), base_model or DEFAULT_MODEL)
    if path is None:
        raise ExportError(f"{why}\nName the adapter or run folder: python export_model.py path/to/run/final, or pass "
                          "--base with the model it was trained on.")
    log.info("%s", why)
    return resolve_adapter(str(path))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from exc


def describe_adapter(given: str, base_override: str = "", cwd: Path | None = None) -> AdapterInfo:
    path, run = find_adapter(given, cwd, base_override)
    lora = _read_json(path / ADAPTER_CONFIG_FILE)
    if lora.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"{path} is a {lora.get('peft_type')} adapter; only LoRA adapters can be merged")
    # The run names the model portably (an id or .gguf); peft records the local folder it loaded.
    base_name = base_override or (run.base_model if run else None) or lora.get("base_model_name_or_path") or ""
    if not base_name:
        raise ExportError(f"{path}/{ADAPTER_CONFIG_FILE} does not name its base model: pass --base")
    base_path = resolve_model(base_name)
    dtype = getattr(_base_config(base_name, base_path), "dtype", None)
    dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    # Only the run's structured record counts (rhizome.runs): an adapter from elsewhere is taken as plain LoRA.
    qlora = run is not None and run.quantization == "nf4"
    return AdapterInfo(path, run.path if run else None, base_name, base_path, lora, qlora,
                       dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32)


def _base_config(name: str, path: str):
    """The base's config; a base stored quantised is refused."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot load the base model '{name}': {exc}\n"
                                 "Pass --base with a local Hugging Face folder, a .gguf file or a model id in "
                                 "your Hugging Face cache.") from exc
    quantization = getattr(config, "quantization_config", None)
    if quantization:
        method = quantization.get("quant_method") if isinstance(quantization, dict) else type(quantization).__name__
        raise ExportError(
            f"the base model '{name}' is stored quantised ({method}). Merging LoRA weights into quantised weights "
            "rounds the adapter's changes away, so it is refused. Merge over the unquantised base, as peft "
            "recommends for QLoRA adapters: pass --base with the full-precision model this checkpoint was made from."
        )
    return config


def load_merged(info: AdapterInfo, tokenizer, verify: bool):
    """(merged model in fp32 on the CPU, reference) where reference holds base + adapter outputs for verify."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(info.base_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(info.path))
    model.eval()
    reference = reference_outputs(model, tokenizer) if verify else None
    merged = model.merge_and_unload()
    return merged, reference


def prompt_ids(tokenizer) -> torch.Tensor:
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": VERIFY_PROMPT}], add_generation_prompt=True,
                                            return_dict=True, return_tensors="pt")["input_ids"]
    else:
        ids = tokenizer(VERIFY_PROMPT, return_tensors="pt")["input_ids"]
    return ids


@torch.no_grad()
def reference_outputs(model, tokenizer, new_tokens: int = 24) -> dict:
    """The prompt's logits and the greedy continuation: what an export must reproduce."""
    ids = prompt_ids(tokenizer)
    logits = model(input_ids=ids).logits[0].float()
    generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                               do_sample=False, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    continuation = generated[0, ids.shape[1]:].tolist()
    return {"logits": logits, "tokens": continuation, "text": tokenizer.decode(continuation, skip_special_tokens=True)}


def compare(reference: dict, candidate: dict) -> dict:
    """Max absolute logit difference (relative to the logits' range) and whether greedy text is identical."""
    diff = (reference["logits"] - candidate["logits"]).abs().max().item()
    scale = reference["logits"].abs().max().item() or 1.0
    return {"max_abs_logit_diff": diff, "relative": diff / scale,
            "same_greedy_text": reference["tokens"] == candidate["tokens"], "text": candidate["text"]}
