"""One trial: a real training run of ``rhizome.train.loop.FineTune`` in ``<tune-dir>/trial-NNNN/``.

The objective is the run's best validation loss on assistant tokens (the loss of the adapter it leaves in
``final/``) after ``--trial-tokens`` real training tokens (``TrainConfig.max_train_tokens``), so trials with
different batches or packing see the same amount of data.

Pruning: the run's observer hears every evaluation. At 1/N, 2/N ... of the trial's steps (N = ``--reports``)
the first evaluation past that point is reported to the trial as the value at step k, so the pruner compares
trials at the same share of the budget even when packing changes their step count. When the pruner says so
the observer answers "pruned" and the run stops after that step, checkpointed, run.json saying why.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import optuna

from rhizome.config import to_dict
from rhizome.log import get_logger
from rhizome.runs import LOG_FILE
from rhizome.train.config import TrainConfig
from rhizome.train.loop import FineTune
from rhizome.tune.config import TuneConfig
from rhizome.tune.space import Space, suggest, trial_config

log = get_logger(__name__)

PRUNED = "pruned"
# Reasons a trial's run stops that are not the pruner's: the user stopped the study (Ctrl+C, SIGTERM, STOP).
USER_STOPS = ("signal", "stop-file")


class StudyInterrupted(KeyboardInterrupt):
    """The user stopped the trial's run; the study ends and the trial is queued again for the next run."""


def trial_dir(tune_dir: Path, number: int) -> Path:
    return tune_dir / f"trial-{number:04d}"


class PruningObserver:
    """Reports the validation loss at each share of the budget; answers "pruned" when the pruner says so."""

    def __init__(self, trial: optuna.Trial, reports: int):
        self.trial = trial
        self.reports = reports
        self.total_steps = 0  # known once the recipe has planned its steps
        self.reported: set[int] = set()

    def __call__(self, record: dict) -> str | None:
        if record.get("kind") != "eval" or not record.get("step") or not self.total_steps:
            return None
        point = math.floor(self.reports * record["step"] / self.total_steps)
        if point < 1 or point in self.reported:
            return None
        self.reported.add(point)
        self.trial.report(record["loss"], point)
        if record["step"] < self.total_steps and self.trial.should_prune():
            return PRUNED
        return None


@contextlib.contextmanager
def _log_to(path: Path):
    """The trial's own train.log beside its checkpoints, as train_script.py writes one."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.getLogger().handlers[0].formatter if logging.getLogger().handlers else None)
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


@dataclass
class Objective:
    tune: TuneConfig
    base: TrainConfig
    space: Space

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.space)
        run_dir = trial_dir(self.tune.dir, trial.number)
        # fresh: a folder left by a deleted study must not be resumed as this trial.
        config = trial_config(self.base, params, output_dir=str(run_dir), fresh=True,
                              max_train_tokens=self.tune.trial_tokens)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("config", to_dict(config))
        log.info("trial %d: %s", trial.number, ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                          for k, v in params.items()))
        run_dir.mkdir(parents=True, exist_ok=True)
        observer = PruningObserver(trial, self.tune.reports)
        recipe = FineTune(config, observers=[observer])
        try:
            with _log_to(run_dir / LOG_FILE):
                recipe.setup()
                observer.total_steps = recipe.total_steps
                result = recipe.train()
            history = recipe.history["train"]
        finally:
            del recipe
            gc.collect()
        tokens = sum(m["real_tokens"] for m in history)
        trial.set_user_attr("train_tokens", tokens)
        trial.set_user_attr("steps", result["steps"])
        trial.set_user_attr("total_steps", result["total_steps"])
        stop_reason = result.get("stop_reason")
        if stop_reason in USER_STOPS:
            role = {k: v for k, v in trial.user_attrs.items() if k == "role"}
            trial.study.enqueue_trial(trial.params, user_attrs=role)
            raise StudyInterrupted(f"trial {trial.number} stopped ({stop_reason})")
        if stop_reason == PRUNED:
            raise optuna.TrialPruned(f"pruned at step {result['steps']} of {result['total_steps']}, "
                                     f"{tokens:,} tokens")
        return float(result["best"]["loss"])
