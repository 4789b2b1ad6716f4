"""TuneConfig: the settings of a tuning study, parsed from one command line together with TrainConfig's.

``tune.py`` takes every ``train_script.py`` flag (they fix what is not searched: data, model, batch,
max length ...) plus the flags below. Both sets are saved as ``tune_config.json`` in the tuning folder.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rhizome.config import option, parse_args
from rhizome.train.config import TrainConfig

# Train settings a study decides per trial, so they are not flags of tune.py.
TRIAL_OWNED = ("output_dir", "fresh", "max_train_tokens")
# On CPU a trial is minutes, not hours: fewer trials, short budgets, small evaluations.
CPU_DEFAULTS = {"trials": 12, "trial_tokens": 40_000}
CUDA_DEFAULTS = {"trials": 40, "trial_tokens": 400_000}
# Train defaults that suit short trials: evaluations often enough for the pruner, one checkpoint at the end.
TRIAL_TRAIN_DEFAULTS = {"eval_steps": 2, "eval_samples": 64, "save_steps": 100_000, "logging_steps": 5}


@dataclass
class TuneConfig:
    tune_dir: str = option("tuning", "the study (study.db), one run folder per trial (trial-NNNN/), "
                                     "best_config.json and tuning_report.md", flag="-o")
    trials: int = option(0, "finished trials (complete or pruned) the study ends with, counting those of earlier "
                            f"runs; 0 = {CPU_DEFAULTS['trials']} on CPU, {CUDA_DEFAULTS['trials']} on CUDA")
    trial_tokens: int = option(0, "real training tokens per trial, the same for every trial whatever its batch or "
                                  f"packing; 0 = {CPU_DEFAULTS['trial_tokens']:,} on CPU, "
                                  f"{CUDA_DEFAULTS['trial_tokens']:,} on CUDA")
    pruner: str = option("median", "stop trials whose validation loss is worse than the median of earlier trials at "
                                   "the same share of the budget (median), successive halving over brackets "
                                   "(hyperband), or never (none)", choices=["median", "hyperband", "none"])
    reports: int = option(4, "points of the token budget (1/N, 2/N ...) at which a trial reports its validation loss "
                             "to the pruner; needs --eval-steps small enough to evaluate at least N times per trial")
    startup_trials: int = option(4, "trials drawn at random before TPE models the results (the defaults trial is one)")
    search_space: str = option("", "JSON file narrowing or extending the search space, keyed by TrainConfig field "
                                    "names (see rhizome/tune/space.py)", metavar="FILE")
    sampler_seed: int = option(0, "seed of the TPE sampler")
    study_name: str = option("rhizome", "name of the study inside study.db")
    heartbeat_seconds: int = option(10, "a running trial writes a heartbeat this often; one silent for twice as long "
                                        "(killed) is marked failed and queued again")

    @property
    def dir(self) -> Path:
        return Path(self.tune_dir)

    def resolved(self, device_kind: str) -> TuneConfig:
        defaults = CUDA_DEFAULTS if device_kind == "cuda" else CPU_DEFAULTS
        return dataclasses.replace(self, trials=self.trials or defaults["trials"],
                                   trial_tokens=self.trial_tokens or defaults["trial_tokens"])


def _copy(field: dataclasses.Field, default: typing.Any = dataclasses.MISSING) -> dataclasses.Field:
    """A fresh field with the same default and flag metadata (make_dataclass would rename the original in place)."""
    if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=field.default_factory, metadata=field.metadata)
    return dataclasses.field(default=field.default if default is dataclasses.MISSING else default,
                             metadata=field.metadata)


def _fields(cls: type, defaults: dict | None = None, skip: Sequence[str] = ()) -> list[tuple]:
    hints = typing.get_type_hints(cls)
    defaults = defaults or {}
    return [(f.name, hints[f.name], _copy(f, defaults.get(f.name, dataclasses.MISSING)))
            for f in dataclasses.fields(cls) if f.name not in skip]


def parse_tune_args(argv: Sequence[str] | None, description: str) -> tuple[TuneConfig, TrainConfig]:
    """One parser for both dataclasses (flags, --help and --config FILE cover them all)."""
    tune_names = {f.name for f in dataclasses.fields(TuneConfig)}
    train_fields = _fields(TrainConfig, TRIAL_TRAIN_DEFAULTS, skip=TRIAL_OWNED)
    assert not tune_names & {name for name, _, _ in train_fields}, "TuneConfig and TrainConfig share a field name"
    combined = dataclasses.make_dataclass("TuneArguments", _fields(TuneConfig) + train_fields)
    values, _ = parse_args(combined, description, argv)
    plain = dataclasses.asdict(values)
    return (TuneConfig(**{k: v for k, v in plain.items() if k in tune_names}),
            TrainConfig(**{k: v for k, v in plain.items() if k not in tune_names}))
