#!/usr/bin/env python3
"""After training: compare the base model and fine-tuned adapters on the test split.

Loss, perplexity and next-token accuracy on assistant tokens, overall, per theme, and for rare vs
common themes (rare: carried by at most --rare-max-pairs training pairs); theme coverage and entropy of
what each adapter was trained on. Writes eval_report.json, eval_report.md and plots.

    python evaluate.py                                    # the newest adapter here vs its base model
    python evaluate.py runs/weighted runs/standard        # several adapters (run folders or final/, best/, checkpoint-N/)
    python evaluate.py my-run/checkpoint-300 --max-samples 50 -o /tmp/quick-eval
    python evaluate.py --qa                               # also: does the chat answer from your own data?

With --qa the chat (its own retrieval and prompt) is also asked questions with known answers, made from the
held-out PDF chunks and replies: base and adapters, each with and without memories.
"""

import sys

from rhizome.config import parse_args
from rhizome.errors import run_main
from rhizome.evaluate import EvalConfig, run
from rhizome.evaluate.report import summary_lines
from rhizome.log import setup_logging


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    config, _ = parse_args(EvalConfig, __doc__, argv)
    setup_logging(config.verbose)
    report = run(config)
    print("\n".join(summary_lines(report)))
    print(f"Evaluated {report['test']['pairs']} test pairs in {report['seconds']:.1f} s on {report['device']}")
    print(f"Report: {report['files'][0]} (table: {report['files'][1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
