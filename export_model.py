#!/usr/bin/env python3
"""Merge a trained LoRA adapter into its base model: a plain Hugging Face folder (+ GGUF for llama.cpp / Ollama).

    python export_model.py                                  # newest *-finetuned/final here -> <run>/merged
    python export_model.py SmolLM2-135M-Instruct-finetuned  # a run folder (its final/), best/ or checkpoint-N/
    python export_model.py run/final -o my-model --gguf-type q4_0   # or q8_0, f32; default f16
    python export_model.py run/final --no-gguf --dtype bfloat16
"""

import sys

from rhizome.config import parse_args
from rhizome.export.config import ExportConfig
from rhizome.export.merge import ExportError
from rhizome.export.pipeline import run, summary_lines
from rhizome.log import setup_logging
from rhizome.train.model import ModelNotFoundError


def main(argv=None) -> int:
    config, _ = parse_args(ExportConfig, __doc__, argv)
    setup_logging(config.verbose)
    try:
        result = run(config)
    except (ExportError, ModelNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
