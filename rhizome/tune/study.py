"""The study: Optuna's TPE sampler and a pruner over trials stored in ``<tune-dir>/study.db`` (SQLite).

Resuming and sharing come from the storage, not from us:

* a running trial writes a heartbeat every ``--heartbeat-seconds``; a trial silent for twice as long (its
  process was killed, even by ``kill -9``) is marked FAIL by the next process that looks, and
  ``RetryHeartbeatStaleTrialCallback`` queues its settings again, so rerunning the same command ends with as many
  finished trials as asked;
* trials are taken from the database in transactions, so two processes (two terminals, or two machines on
  one shared database) on one study never run the same trial: each runs its own trial numbers.

The study ends with ``--trials`` finished (complete or pruned) trials, counting earlier runs'. A process that
finds the remaining trials running elsewhere waits for them (they may turn out to be dead, and be retried).
Trial 0 is the flags' own settings (``enqueue_trial``), so the report compares the best trial with them.
"""

from __future__ import annotations

import fcntl
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from rhizome.config import save_config, to_dict
from rhizome.device import detect_device
from rhizome.errors import UserError
from rhizome.log import get_logger, progress
from rhizome.train.config import RESUMABLE_CHANGES, TrainConfig
from rhizome.tune.config import TuneConfig
from rhizome.tune.objective import Objective
from rhizome.tune.space import Space, defaults_params, load_space

log = get_logger(__name__)

STUDY_FILE = "study.db"
LOCK_FILE = "study.lock"
CONFIG_FILE = "tune_config.json"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Study settings a rerun may change: how many trials, how they are run, not what a trial means.
CHANGEABLE = frozenset({"trials", "heartbeat_seconds", "startup_trials", "tune_dir"}) | RESUMABLE_CHANGES


class StudySettingsError(UserError):
    pass


def make_pruner(tune: TuneConfig) -> optuna.pruners.BasePruner:
    if tune.pruner == "median":
        # Never at the first report (one evaluation is noisy), and only once two trials give a median.
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=tune.reports, reduction_factor=3)
    return optuna.pruners.NopPruner()


def storage_url(tune: TuneConfig) -> str:
    return f"sqlite:///{(tune.dir / STUDY_FILE).resolve()}"


def _settings(tune: TuneConfig, train: TrainConfig, space: Space) -> dict:
    values = {**to_dict(tune), **to_dict(train)}
    return {"settings": {k: v for k, v in values.items() if k not in CHANGEABLE}, "space": space}


def open_study(tune: TuneConfig, train: TrainConfig, space: Space) -> optuna.Study:
    """Create the study, or load it after checking it was made with the same settings."""
    tune.dir.mkdir(parents=True, exist_ok=True)
    expected = _settings(tune, train, space)
    # Two processes starting a new study at once would both create the database's tables (alembic's version row
    # clashes) and both queue the defaults trial: one does it, under a lock.
    with open(tune.dir / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: "experimental"
            storage = RDBStorage(
                storage_url(tune), engine_kwargs={"connect_args": {"timeout": 60}},  # SQLite: wait for the writer
                heartbeat_interval=tune.heartbeat_seconds, grace_period=2 * tune.heartbeat_seconds,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
        study = optuna.create_study(storage=storage, study_name=tune.study_name, direction="minimize",
                                    pruner=make_pruner(tune), load_if_exists=True)
        saved = study.user_attrs.get("definition")
        if saved is None:
            study.set_user_attr("definition", expected)
            study.enqueue_trial(defaults_params(space, train), user_attrs={"role": "defaults"})
        openings = study.user_attrs.get("openings", 0)
        study.set_user_attr("openings", openings + 1)
    if saved is not None and saved != expected:
        changed = sorted({k for k in {*saved["settings"], *expected["settings"]}
                          if saved["settings"].get(k) != expected["settings"].get(k)}
                         | ({"search space"} if saved["space"] != expected["space"] else set()))
        raise StudySettingsError(
            f"the study in {tune.dir / STUDY_FILE} was made with other settings ({', '.join(changed)}); rerun "
            "with the same ones to continue it, or give another --tune-dir for a new study")
    # Each opening of the study (a rerun, a second process) draws its own random settings, not the first ones again.
    study.sampler = optuna.samplers.TPESampler(seed=tune.sampler_seed + openings,
                                               n_startup_trials=tune.startup_trials, constant_liar=True)
    return study


def _counts(study: optuna.Study) -> tuple[int, int]:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return sum(s in FINISHED for s in states), sum(s == TrialState.RUNNING for s in states)


def run_study(study: optuna.Study, objective: Objective, tune: TuneConfig) -> None:
    """Run trials until the study holds ``tune.trials`` finished ones (a progress bar with the study's ETA)."""
    finished, _ = _counts(study)
    bar = progress(desc="tuning", total=tune.trials, unit="trial")
    bar.initial = bar.n = min(finished, tune.trials)
    bar.refresh()
    failures = 0
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)
        finished, running = _counts(study)
        bar.update(min(finished, tune.trials) - bar.n)
        if finished >= tune.trials:
            break
        if finished + running >= tune.trials:
            time.sleep(tune.heartbeat_seconds)  # the last trials run elsewhere, or died and are not yet stale
            continue
        states: list[TrialState] = []
        # Out of memory is the settings' fault (a large rank, no packing), not the study's: that trial fails.
        study.optimize(objective, n_trials=1, gc_after_trial=True, catch=(MemoryError, _cuda_oom()),
                       callbacks=[lambda _, trial: states.append(trial.state)])
        failures = failures + 1 if states == [TrialState.FAIL] else 0
        if failures >= 3:
            raise UserError(f"{failures} trials in a row failed in {tune.dir}; read their trial-*/train.log")
    bar.close()


def _cuda_oom() -> type[BaseException]:
    import torch

    return torch.OutOfMemoryError


def prepare(tune: TuneConfig, train: TrainConfig) -> tuple[TuneConfig, Space]:
    """Device-dependent defaults, inputs checked, settings saved beside the study."""
    tune = tune.resolved(detect_device(train.force_cpu).kind)
    for flag, path, why in (("--train-file", train.train_file, ""),
                            ("--validation-file", train.validation_file, " (trials are compared by validation loss)")):
        if not path or not Path(path).is_file():
            raise UserError(f"no file at {path!r} for {flag}{why}; run data_formatter.py first or pass {flag}")
    if tune.reports < 1:
        raise UserError("--reports must be at least 1")
    space = load_space(tune.search_space, train, tune.trial_tokens)
    tune.dir.mkdir(parents=True, exist_ok=True)
    save_config(tune, tune.dir / CONFIG_FILE, train=to_dict(train), search_space=space)
    return tune, space


def tune_study(tune: TuneConfig, train: TrainConfig) -> tuple[optuna.Study, TuneConfig]:
    """Open (or continue) the study and run it to ``tune.trials`` finished trials."""
    tune, space = prepare(tune, train)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(tune, train, space)
    run_study(study, Objective(tune, train, space), tune)
    return study, tune
