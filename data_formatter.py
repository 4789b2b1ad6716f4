#!/usr/bin/env python3
"""Stage 3 of RhizomeML: turn conversations and PDF chunks into a training set in data_finetune/.

    python data_formatter.py                       # conversations.json, conversations2.json, pdf_texts.json here
    python data_formatter.py --enable-semantic-labeling --extract-keyphrases \\
        --semantic-mode adaptive --semantic-method hybrid \\
        --dedup-similarity-threshold 0.95 --qa-quality-score-threshold 0.46

Steps: load -> clean -> pairs -> quality -> dedup -> themes -> split -> write (see README).
"""

import os
import sys

# FAISS's idle OpenMP threads spin by default; on a busy 2-core machine that made dedup 5-40x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rhizome.config import parse_args
from rhizome.errors import run_main
from rhizome.format.pipeline import FormatConfig, run
from rhizome.format.steps import StepLog
from rhizome.log import setup_logging


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    config, _ = parse_args(FormatConfig, __doc__, argv)
    setup_logging(config.verbose)
    steps = StepLog()
    metadata = run(config, steps)
    print(f"\n{steps.table()}\n")
    splits = ", ".join(f"{name} {n}" for name, n in metadata["splits"].items())
    print(f"Wrote {metadata['total_pairs']} pairs ({splits}) to {config.output_dir}/")
    preferences = metadata["preferences"]
    if preferences["kept"]:
        kinds = ", ".join(f"{kind} {n}" for kind, n in preferences["mined"].items())
        splits = ", ".join(f"{name} {sum(k.values())}" for name, k in preferences["splits"].items())
        print(f"Wrote {preferences['kept']} preference pairs ({kinds}; {splits}) to "
              f"{config.output_dir}/dataset_preferences_*.jsonl: train_script.py --method dpo")
    if metadata["secrets_redacted"]:
        print("Secrets redacted: " + ", ".join(f"{k} {v}" for k, v in metadata["secrets_redacted"].items()))
    if metadata["personal_data_redacted"]:
        print("Personal data redacted: " + ", ".join(f"{k} {v}" for k, v in metadata["personal_data_redacted"].items()))
    if metadata["unique_themes"]:
        top = ", ".join(list(metadata["theme_distribution"])[:8])
        print(f"{metadata['unique_themes']} themes; most common: {top}")
    for error in metadata["import"]["errors"]:
        print(f"! {error['file']}: {error['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
