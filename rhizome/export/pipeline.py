"""``export_model.py``: adapter -> merged Hugging Face folder (+ GGUF, Modelfile), checked, written atomically.

The output folder holds ``model.safetensors``, ``config.json``, ``generation_config.json``, the tokenizer,
``README.md`` (base, adapter, date, how to load), ``export_config.json`` (the settings and the check's
figures) and, for Llama-family models, ``<name>-<type>.gguf`` with an Ollama ``Modelfile``. It is built in
a temporary folder and renamed when complete, so a killed export leaves no half-written model.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rhizome import atomic
from rhizome.config import save_config
from rhizome.export.config import ExportConfig
from rhizome.export.gguf_writer import GGUFUnsupportedError, gguf_outputs, write_gguf
from rhizome.export.modelfile import Modelfile, build_modelfile
from rhizome.export.merge import AdapterInfo, ExportError, compare, describe_adapter, load_merged, reference_outputs
from rhizome.log import get_logger

log = get_logger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Ollama reserves the KV cache for num_ctx up front: a 128k-token model would ask for gigabytes by default.
MAX_NUM_CTX = 8192


@dataclass
class ExportResult:
    output: Path
    info: AdapterInfo
    dtype: str
    model_bytes: int
    gguf_file: Path | None = None
    gguf_bytes: int = 0
    gguf_skipped: str = ""
    modelfile: Modelfile | None = None
    checks: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


def default_output(info: AdapterInfo) -> Path:
    if info.run_dir is not None:
        return info.run_dir / "merged"
    return info.path.parent / f"{info.path.name}-merged"


def _load_tokenizer(info: AdapterInfo):
    from transformers import AutoTokenizer

    # final/ carries the tokenizer the run trained with; checkpoints do not, the base's is the same.
    source = info.path if (info.path / "tokenizer_config.json").is_file() else Path(info.base_path)
    return AutoTokenizer.from_pretrained(str(source)), source


def model_card(info: AdapterInfo, result: ExportResult, config: ExportConfig) -> str:
    lines = [
        f"# {Path(info.base_name).name} with a RhizomeML LoRA adapter merged in", "",
        f"- Base model: `{info.base_name}`",
        f"- Adapter: `{info.path.resolve()}` (LoRA r={info.lora.get('r')}, alpha={info.lora.get('lora_alpha')}, "
        f"modules {', '.join(sorted(info.lora.get('target_modules') or []))})"
        + (" trained as QLoRA over a 4-bit NF4 base, merged over the unquantised base" if info.qlora else ""),
        f"- Exported: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}, weights in {result.dtype}, merged in fp32",
    ]
    if result.gguf_file:
        lines.append(f"- GGUF for llama.cpp / Ollama: `{result.gguf_file.name}` ({config.gguf_type}), "
                     "with a `Modelfile` beside it")
    for name, check in result.checks.items():
        lines.append(f"- Check ({name} vs base + adapter): max logit difference {check['max_abs_logit_diff']:.2e}, "
                     f"greedy text {'identical' if check['same_greedy_text'] else 'DIFFERENT'}")
    lines += ["", "Loads with transformers alone (no peft):", "", "```python",
              "from transformers import AutoModelForCausalLM, AutoTokenizer",
              f"model = AutoModelForCausalLM.from_pretrained({str(result.output)!r})",
              f"tokenizer = AutoTokenizer.from_pretrained({str(result.output)!r})", "```", ""]
    return "\n".join(lines)


def run(config: ExportConfig) -> ExportResult:
    logging.getLogger("gguf").setLevel(logging.WARNING)  # it logs the whole chat template and vocabulary
    timings: dict = {}
    start = time.perf_counter()
    info = describe_adapter(config.adapter, config.base)
    output = Path(config.output) if config.output else default_output(info)
    if output.exists() and not config.overwrite:
        raise ExportError(f"{output} already exists: pass --overwrite to replace it, or --output DIR")
    if info.qlora:
        log.warning("this adapter was trained as QLoRA over a 4-bit base: merging it over the unquantised base, as "
                    "peft recommends; outputs differ slightly from the 4-bit base + adapter it was trained with")
    tokenizer, tokenizer_dir = _load_tokenizer(info)
    log.info("merging %s into %s (CPU, fp32)", info.path, info.base_name)
    merged, reference = load_merged(info, tokenizer, config.verify)
    save_dtype = info.base_dtype if config.dtype == "auto" else DTYPES[config.dtype]
    timings["load_and_merge"] = time.perf_counter() - start
    result = ExportResult(output, info, str(save_dtype).removeprefix("torch."), 0)

    def write(folder: Path) -> None:
        t0 = time.perf_counter()
        if reference is not None:
            result.checks["merged"] = compare(reference, reference_outputs(merged, tokenizer))
            timings["check"] = time.perf_counter() - t0
        if config.gguf:
            t0 = time.perf_counter()
            result.gguf_file = folder / f"{output.name}-{config.gguf_type}.gguf"
            try:
                result.gguf_bytes = write_gguf(merged, tokenizer, tokenizer_dir, result.gguf_file, config.gguf_type,
                                               name=output.name)
                result.modelfile = build_modelfile(result.gguf_file.name, tokenizer, merged.generation_config,
                                                   min(int(merged.config.max_position_embeddings), MAX_NUM_CTX))
                atomic.write_text(folder / "Modelfile", result.modelfile.text())
            except GGUFUnsupportedError as exc:
                log.warning("no GGUF written: %s", exc)
                result.gguf_file, result.gguf_skipped = None, str(exc)
            timings["gguf"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        merged.to(save_dtype).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        timings["save"] = time.perf_counter() - t1
        if reference is not None and result.gguf_file is not None:
            t2 = time.perf_counter()
            result.checks["gguf"] = compare(reference, gguf_outputs(folder, result.gguf_file.name, tokenizer))
            timings["gguf_check"] = time.perf_counter() - t2
        atomic.write_text(folder / "README.md", model_card(info, result, config))
        save_config(config, folder / "export_config.json", base_model=info.base_name, adapter=str(info.path),
                    checks={k: {n: v for n, v in c.items() if n != "text"} for k, c in result.checks.items()})

    atomic.write_dir(output, write)
    if result.gguf_file is not None:
        result.gguf_file = output / result.gguf_file.name
    result.model_bytes = sum(p.stat().st_size for p in output.glob("*.safetensors"))
    timings["total"] = time.perf_counter() - start
    result.seconds = timings
    return result


def _size(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n < 1e9 else f"{n / 1e9:,.2f} GB"


def ollama_name(result: ExportResult) -> str:
    """The run's name (``SmolLM2-135M-Instruct-finetuned`` -> ``smollm2-135m-instruct``) as Ollama accepts it."""
    source = result.info.run_dir.name if result.info.run_dir else result.output.name
    return re.sub(r"[^a-z0-9._-]+", "-", source.removesuffix("-finetuned").lower()).strip("-.") or "rhizome"


def summary_lines(result: ExportResult) -> list[str]:
    out = result.output
    lines = [f"Merged {result.info.path} into {result.info.base_name}",
             f"Hugging Face folder: {out} ({_size(result.model_bytes)} of {result.dtype} weights)"]
    if result.gguf_file:
        lines.append(f"GGUF: {result.gguf_file} ({_size(result.gguf_bytes)})")
    if result.modelfile is not None:
        spec = result.modelfile
        lines.append(f"Modelfile: {'ChatML TEMPLATE' if spec.template else 'no TEMPLATE (' + spec.note + ')'}, "
                     f"stops {', '.join(spec.stops)}" + (", SYSTEM from the chat template" if spec.system else ""))
    elif result.gguf_skipped:
        lines.append(f"GGUF: not written ({result.gguf_skipped})")
    for name, check in result.checks.items():
        lines.append(f"Check {name} vs base + adapter: max logit difference {check['max_abs_logit_diff']:.2e} "
                     f"({check['relative']:.1e} of the logit range), greedy text "
                     + ("identical" if check["same_greedy_text"] else "different"))
    seconds = result.seconds
    lines.append("Time: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    lines += ["", "Use it:", f"  transformers: AutoModelForCausalLM.from_pretrained('{out}')"]
    if result.gguf_file:
        name = ollama_name(result)
        lines += [f"  Ollama:    cd {out} && ollama create {name} -f Modelfile && ollama run {name}",
                  f"  llama.cpp: llama-cli -m {result.gguf_file} -cnv   (or llama-server -m {result.gguf_file.name})"]
    return lines
