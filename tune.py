#!/usr/bin/env python3
"""Automatic hyperparameter tuning of train_script.py: Optuna TPE search with pruning, resumable from SQLite.

Every trial is a real training run in <tune-dir>/trial-NNNN/ with --trial-tokens training tokens; the
best settings are written to <tune-dir>/best_config.json (python train_script.py --config best_config.json)
with tuning_report.md and plots. Every train_script.py flag fixes the setting it names for all trials.

    python tune.py                                      # data_finetune/, 12 trials on a CPU
    python tune.py                                      # again after a kill: continues the study
    python tune.py --trials 30 --trial-tokens 200000 --pruner hyperband --search-space space.json
    python tune.py & python tune.py                     # two processes share the study's trials
"""

import sys

from rhizome.errors import run_main
from rhizome.log import setup_logging
from rhizome.tune.config import parse_tune_args
from rhizome.tune.report import BEST_CONFIG_FILE, REPORT_FILE, compute_line, summary_line, write_report
from rhizome.tune.study import tune_study


def main(argv=None) -> int:
    tune, train = parse_tune_args(argv, __doc__)
    setup_logging(train.verbose)
    study, tune = tune_study(tune, train)
    summary = write_report(study, tune)
    print(summary_line(summary))
    print(compute_line(summary))
    print(f"Best settings: {tune.dir / BEST_CONFIG_FILE}; report: {tune.dir / REPORT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
