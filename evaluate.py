#!/usr/bin/env python3
"""After training: compare the base model and fine-tuned adapters on the test split.

Loss, perplexity and next-token accuracy on assistant tokens, overall, per theme, and for rare vs
common themes (rare: carried by at most --rare-max-pairs training pairs); theme coverage and entropy of
what each adapter was trained on. Writes eval_report.json, eval_report.md and plots.

    python evaluate.py                                    # SmolLM2-135M-Instruct-finetuned/ vs its base model
    python evaluate.py runs/weighted runs/standard        # several adapters (run folders or final/, best/, checkpoint-N/)
    python evaluate.py my-run/checkpoint-300 --max-samples 50 -o /tmp/quick-eval
    python evaluate.py --qa                               # also: does the chat answer from your own data?

With --qa the chat (its own retrieval and prompt) is also asked questions with known answers, made from the
held-out PDF chunks and replies: base and adapters, each with and without memories.
"""

import sys

from rhizome.config import parse_args
from rhizome.evaluate import EvalConfig, EvalInputError, run
from rhizome.evaluate.report import summary_lines
from rhizome.log import setup_logging
from rhizome.train.data import DatasetFileError
from rhizome.train.model import ModelNotFoundError


def main(argv=None) -> int:
    config, _ = parse_args(EvalConfig, __doc__, argv)
    setup_logging(config.verbose)
    try:
        report = run(config)
    except (EvalInputError, ModelNotFoundError, DatasetFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(report)))
    print(f"Evaluated {report['test']['pairs']} test pairs in {report['seconds']:.1f} s on {report['device']}")
    print(f"Report: {report['files'][0]} (table: {report['files'][1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
