"""The search space: which TrainConfig fields a study varies, over which ranges.

Every name is a ``TrainConfig`` field, so a trial's settings are a TrainConfig (``trial_config``) and the best
one is a ``train_script.py --config`` file. The default space, and why:

    learning_rate       1e-5 .. 1e-3, log     decides more than anything else at a small budget
    lora_r              4, 8, 16, 32, 64      capacity of the adapter (its matrices' inner size)
    lora_alpha          8, 16, 32, 64, 128    with r, the update's scale alpha / r
    lora_dropout        0 .. 0.2
    warmup_steps        0 .. a quarter of the trial's steps (estimated from --trial-tokens, rows per step and
                        max length), a warm-up ratio in the unit train_script.py takes
    weight_decay        0 .. 0.1
    theme_temperature   0.25 .. 4, log        how much theme weights shape sampling (1 = as weighted)
    use_sequence_packing  true, false

``--search-space FILE`` is a JSON object merged over it: ``{"lora_r": {"choices": [8, 16]}}`` narrows a
range, ``{"max_grad_norm": {"low": 0.3, "high": 3.0, "log": true}}`` adds a field, ``{"lora_dropout": null}``
removes one (it then keeps its flag's value). A range is ``{"low", "high", "log"?: bool}`` (an int field draws
integers), a set is ``{"choices": [...]}``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Any

from rhizome.errors import UserError
from rhizome.train.config import TrainConfig
from rhizome.tune.config import TRIAL_OWNED

Space = dict[str, dict[str, Any]]


class SearchSpaceError(UserError):
    pass


def default_space(train: TrainConfig, trial_tokens: int) -> Space:
    rows_per_step = (train.per_device_train_batch_size or 2) * train.gradient_accumulation_steps
    estimated_steps = max(1, math.ceil(trial_tokens / (rows_per_step * train.max_seq_length)))
    return {
        "learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
        "lora_r": {"choices": [4, 8, 16, 32, 64]},
        "lora_alpha": {"choices": [8, 16, 32, 64, 128]},
        "lora_dropout": {"low": 0.0, "high": 0.2},
        "warmup_steps": {"low": 0, "high": max(1, estimated_steps // 4)},
        "weight_decay": {"low": 0.0, "high": 0.1},
        "theme_temperature": {"low": 0.25, "high": 4.0, "log": True},
        "use_sequence_packing": {"choices": [True, False]},
    }


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig) if f.name not in TRIAL_OWNED}


def check_space(space: Space, source: str) -> Space:
    """Every name a searchable TrainConfig field, every range well formed; the message names ``source``."""
    types = _field_types()
    for name, spec in space.items():
        if name not in types:
            raise SearchSpaceError(f"{source}: {name!r} is not a TrainConfig field that a trial can vary; "
                                   f"use one of: {', '.join(sorted(types))}")
        if not isinstance(spec, dict):
            raise SearchSpaceError(f"{source}: {name} must be {{\"low\", \"high\"}}, {{\"choices\"}} or null")
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise SearchSpaceError(f"{source}: {name}'s choices must be a non-empty list")
            continue
        if types[name] not in (int, float):
            raise SearchSpaceError(f"{source}: {name} is not a number; give it {{\"choices\": [...]}}")
        low, high = spec.get("low"), spec.get("high")
        if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or low > high:
            raise SearchSpaceError(f"{source}: {name} needs numbers low <= high, got {low!r} and {high!r}")
        if spec.get("log") and low <= 0:
            raise SearchSpaceError(f"{source}: {name} is searched on a log scale, so low must be above 0")
    return space


def load_space(path: str, train: TrainConfig, trial_tokens: int) -> Space:
    """The default space with the file's changes merged over it (no file: the default)."""
    space = default_space(train, trial_tokens)
    if path:
        try:
            changes = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SearchSpaceError(f"cannot read the search space {path}: {exc}") from exc
        if not isinstance(changes, dict):
            raise SearchSpaceError(f"{path} must hold a JSON object keyed by TrainConfig field names")
        for name, spec in changes.items():
            if spec is None:
                space.pop(name, None)
            else:
                space[name] = spec
    return check_space(space, path or "the default search space")


def suggest(trial, space: Space) -> dict[str, Any]:
    """The trial's value for each field (an enqueued trial gets the values it was enqueued with)."""
    types = _field_types()
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if "choices" in spec:
            params[name] = trial.suggest_categorical(name, spec["choices"])
        elif types[name] is int:
            params[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        else:
            params[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]),
                                               log=bool(spec.get("log")))
    return params


def defaults_params(space: Space, train: TrainConfig) -> dict[str, Any]:
    """The flags' own values for the defaults trial; one outside a narrowed set of choices is left to the sampler."""
    params = {name: getattr(train, name) for name in space}
    return {name: value for name, value in params.items()
            if "choices" not in space[name] or value in space[name]["choices"]}


def trial_config(base: TrainConfig, params: dict[str, Any], **trial_owned: Any) -> TrainConfig:
    """The base settings with the trial's values (and what the study decides per trial: its folder, budget)."""
    return dataclasses.replace(base, **params, **trial_owned)
