"""Finding what to evaluate: an adapter folder, the run it belongs to, its base model and its theme statistics.

An adapter is given as a run folder of ``train_script.py`` (its ``final/`` is evaluated) or as one of the
folders inside it that hold LoRA weights: ``final/``, ``best/`` or ``checkpoint-N/``. A folder that holds
``adapter_config.json`` directly is accepted wherever it lives (``rhizome.runs.resolve_adapter``). With none
given, the run of the newest adapter here is evaluated (``rhizome.runs.newest_adapter``).

"What the model was trained on" comes from the training run's ``ThemeTracker`` state
(``rhizome.train.tracker``): ``theme_tracker_state.json`` in the adapter folder (checkpoints have one),
else in its run folder (the state at the end of training), else the ``summary`` of ``final/``'s
``training_metrics.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from rhizome.errors import UserError
from rhizome.log import get_logger
from rhizome.runs import ADAPTER_CONFIG_FILE, Run, newest_adapter, resolve_adapter

log = get_logger(__name__)

TRACKER_FILE = "theme_tracker_state.json"


class EvalInputError(UserError, ValueError):
    """A missing or unusable input (test file, adapter, base model); the CLI exits with code 2."""


@dataclass(frozen=True)
class Adapter:
    name: str  # unique among the evaluated models, never "base"
    path: Path  # the folder holding adapter_config.json
    run_dir: Path | None  # the training run it comes from, when known
    base_model: str | None  # as the run named it (training_config.json), else adapter_config.json's


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def default_adapter(base_model: str, root: str | os.PathLike = ".") -> str:
    """The run folder evaluated when none is named: the run of the newest adapter (see rhizome.runs)."""
    path, why = newest_adapter(root, base_model)
    if path is None:
        raise EvalInputError(f"{why} Or name the adapters: python evaluate.py RUN_OR_ADAPTER_FOLDER ...")
    log.info("%s", why)
    return str(path.parent)


def _short_name(path: Path, run: Run | None) -> str:
    if run is None:
        return path.resolve().name
    return run.name + ("" if path.name == "final" else f"/{path.name}")


def resolve_adapters(given: list[str]) -> list[Adapter]:
    adapters: list[Adapter] = []
    taken = {"base"}
    for item in given:
        path, run = resolve_adapter(item)
        name = _short_name(path, run)
        unique, n = name, 2
        while unique in taken:
            unique, n = f"{name}-{n}", n + 1
        taken.add(unique)
        adapter_config = _read_json(path / ADAPTER_CONFIG_FILE) or {}
        base = (run.base_model if run else None) or adapter_config.get("base_model_name_or_path")
        adapters.append(Adapter(unique, path, run.path if run else None, base))
    return adapters


def choose_base_model(requested: str, adapters: list[Adapter]) -> str:
    """The base model to load: ``requested``, else the one every adapter names."""
    if requested:
        return requested
    named = sorted({a.base_model for a in adapters if a.base_model})
    if not named:
        raise EvalInputError("cannot tell which base model the adapters were trained on (no training_config.json "
                             "or base_model_name_or_path); pass --base-model")
    if len(named) > 1:
        raise EvalInputError(f"the adapters were trained on different base models ({', '.join(named)}); "
                             "evaluate them separately or pass --base-model")
    return named[0]


def trained_on(adapter: Adapter) -> dict | None:
    """Theme coverage and entropy of the adapter's training run, or None when no tracker state is found."""
    candidates = [adapter.path / TRACKER_FILE]
    if adapter.run_dir is not None:
        candidates.append(adapter.run_dir / TRACKER_FILE)
    for path in candidates:
        state = _read_json(path)
        if state is not None and "coverage" in state:
            return _theme_summary(state, path)
    metrics = _read_json(adapter.path / "training_metrics.json")
    if metrics is not None and isinstance(metrics.get("summary"), dict) and "coverage" in metrics["summary"]:
        return _theme_summary(metrics["summary"], adapter.path / "training_metrics.json")
    return None


def _theme_summary(state: dict, source: Path) -> dict:
    return {"coverage": float(state["coverage"]), "entropy": float(state.get("entropy", 0.0)),
            "themes_seen": int(state.get("themes_seen", 0)), "themes_total": int(state.get("dataset_themes", 0)),
            "source": str(source)}
