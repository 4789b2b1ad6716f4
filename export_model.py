#!/usr/bin/env python3
"""Merge a trained LoRA adapter into its base model: a plain Hugging Face folder (+ GGUF for llama.cpp / Ollama).

    python export_model.py                                  # the newest adapter here -> <run>/merged
    python export_model.py SmolLM2-135M-Instruct-finetuned  # a run folder (its final/), best/ or checkpoint-N/
    python export_model.py run/final -o my-model --gguf-type q4_0   # or q8_0, f32; default f16
    python export_model.py run/final --no-gguf --dtype bfloat16
"""

import sys

from rhizome.config import parse_args
from rhizome.errors import run_main
from rhizome.export.config import ExportConfig
from rhizome.export.pipeline import run, summary_lines
from rhizome.log import setup_logging


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    config, _ = parse_args(ExportConfig, __doc__, argv)
    setup_logging(config.verbose)
    result = run(config)
    print("\n".join(summary_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
