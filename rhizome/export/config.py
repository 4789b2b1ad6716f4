"""ExportConfig: the settings of ``export_model.py``, saved as ``export_config.json`` in the exported folder."""

from __future__ import annotations

from dataclasses import dataclass

from rhizome.config import option


@dataclass
class ExportConfig:
    adapter: str = option("", "a LoRA adapter folder (final/, best/, checkpoint-N/) or a training run folder "
                              "(<model>-finetuned/, meaning its final/); default: the newest final/ adapter of a run "
                              "folder here trained on --base, or on the shipped model (see README, Which adapter is used)",
                          positional=True, metavar="ADAPTER")
    output: str = option("", "folder to write; default: <run>/merged", flag="-o")
    base: str = option("", "base model to merge into (Hugging Face id, local folder or .gguf); default: the model "
                           "the run was trained on (run.json, training_config.json, else adapter_config.json)")
    dtype: str = option("auto", "dtype of the saved weights (the merge itself runs in fp32); auto = the base's",
                        choices=["auto", "float32", "float16", "bfloat16"])
    gguf: bool = option(True, "also write a GGUF file for llama.cpp / Ollama (Llama-family models)")
    gguf_type: str = option("f16", "GGUF tensor type: f16 (half the size, what llama.cpp's converter writes by "
                                   "default), f32 (exact), q8_0 (8-bit, a quarter of f32) or q4_0 (4-bit, an eighth; "
                                   "output matrix in q8_0). k-quants (q4_k_m): run llama.cpp's llama-quantize "
                                   "on the f16 file", choices=["f16", "f32", "q8_0", "q4_0"])
    verify: bool = option(True, "check the export: greedy text and logits of the merged model (and the GGUF read "
                                "back with transformers) against base + adapter")
    overwrite: bool = option(False, "replace an existing output folder")
    verbose: bool = option(False, "debug logging")
