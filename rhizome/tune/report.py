"""What a study leaves for the user: ``best_config.json``, ``tuning_report.md`` and its plots.

``best_config.json`` holds the best trial's TrainConfig, all of it but its run folder, so
``train_script.py --config best_config.json`` trains those settings unchanged (``max_train_tokens`` included:
the settings were best at that budget; pass ``--max-train-tokens 0`` to train by epochs instead).
"""

from __future__ import annotations

import io
import logging
import statistics
import warnings
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from rhizome import atomic
from rhizome.errors import UserError
from rhizome.log import get_logger
from rhizome.tune.config import TuneConfig

log = get_logger(__name__)

BEST_CONFIG_FILE = "best_config.json"
REPORT_FILE = "tuning_report.md"
# Settings of the trial's run, not of training: the user's run gets its own folder.
NOT_TRAINING = ("output_dir", "fresh")


def best_config(trial: FrozenTrial) -> dict:
    return {k: v for k, v in trial.user_attrs["config"].items() if k not in NOT_TRAINING}


def summarize(study: optuna.Study, tune: TuneConfig) -> dict:
    """Best vs defaults, and the training tokens pruning saved (a pruned trial would have used a full budget)."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    if not complete:
        raise UserError(f"no trial of the study in {tune.dir} has completed yet; run tune.py again")
    best = min(complete, key=lambda t: t.value)
    defaults = next((t for t in complete if t.user_attrs.get("role") == "defaults"), None)
    full = statistics.median(t.user_attrs["train_tokens"] for t in complete)
    used = sum(t.user_attrs.get("train_tokens", 0) for t in complete + pruned)
    unpruned = sum(t.user_attrs["train_tokens"] for t in complete) + full * len(pruned)
    return {
        "trials": len(complete) + len(pruned), "complete": len(complete), "pruned": len(pruned),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "best": {"trial": best.number, "loss": best.value, "params": best.params,
                 "run_dir": best.user_attrs["run_dir"]},
        "defaults": None if defaults is None else {"trial": defaults.number, "loss": defaults.value},
        "train_tokens": used, "train_tokens_without_pruning": unpruned, "tokens_saved": 1 - used / unpruned,
        "trial_tokens": tune.trial_tokens,
    }


def summary_line(summary: dict) -> str:
    best, defaults = summary["best"], summary["defaults"]
    line = f"Best: trial {best['trial']}, validation loss {best['loss']:.4f}"
    if defaults is not None and defaults["trial"] == best["trial"]:
        line += f": the default settings (trial {defaults['trial']}); no trial beat them"
    elif defaults is not None:
        change = best["loss"] / defaults["loss"] - 1
        line += (f" vs {defaults['loss']:.4f} with the default settings (trial {defaults['trial']}), "
                 f"{change:+.1%}, at {summary['trial_tokens']:,} training tokens each")
    return line


def compute_line(summary: dict) -> str:
    return (f"Trials: {summary['complete']} complete, {summary['pruned']} pruned, {summary['failed']} failed; "
            f"{summary['train_tokens']:,} training tokens, {summary['tokens_saved']:.0%} fewer than "
            f"{summary['train_tokens_without_pruning']:,.0f} without pruning")


def _save_plot(draw, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    try:
        axes = draw()
    except (ValueError, RuntimeError) as exc:  # importances need two complete trials whose settings differ
        log.warning("no %s: %s", path.name, exc)
        return False
    figure = np.atleast_1d(axes).flat[0].figure
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic.write_bytes(path, buffer.getvalue())
    return True


def plots(study: optuna.Study, folder: Path) -> list[str]:
    from optuna.visualization import matplotlib as vis

    drawn = []
    # Optuna's slice plot passes numbers as category labels; matplotlib says so at INFO for every axis.
    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # a slice of one distinct value: matplotlib widens its axis
        for name, draw in (("tuning_history.png", lambda: vis.plot_optimization_history(study)),
                           ("tuning_importances.png", lambda: vis.plot_param_importances(study)),
                           ("tuning_slice.png", lambda: vis.plot_slice(study))):
            if _save_plot(draw, folder / name):
                drawn.append(name)
    return drawn


def _value(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def markdown(study: optuna.Study, tune: TuneConfig, summary: dict, images: list[str]) -> str:
    names = sorted({name for t in study.trials for name in t.params})
    lines = [f"# Tuning report: {tune.dir}", "",
             f"Study `{tune.study_name}` in `{tune.dir / 'study.db'}`: TPE (seed {tune.sampler_seed}), pruner "
             f"{tune.pruner} at {tune.reports} points of each trial's budget of {tune.trial_tokens:,} training tokens.",
             "", f"- {summary_line(summary)}", f"- {compute_line(summary)}",
             f"- Best settings: `{BEST_CONFIG_FILE}` (`python train_script.py --config {BEST_CONFIG_FILE}`); its run: "
             f"`{summary['best']['run_dir']}`", "",
             "| trial | state | validation loss | training tokens | steps | " + " | ".join(names) + " |",
             "|---" * (5 + len(names)) + "|"]
    for t in study.trials:
        loss = "" if t.value is None else f"({t.value:.4f})" if t.state == TrialState.PRUNED else f"{t.value:.4f}"
        role = " (defaults)" if t.user_attrs.get("role") == "defaults" else ""
        steps = f"{t.user_attrs['steps']}/{t.user_attrs['total_steps']}" if "steps" in t.user_attrs else ""
        lines.append(f"| {t.number}{role} | {t.state.name.lower()} | {loss} | {t.user_attrs.get('train_tokens', 0):,} "
                     f"| {steps} | " + " | ".join(_value(t.params.get(n, "")) for n in names) + " |")
    lines += ["", "A pruned trial's loss, in brackets, is its last report to the pruner.", ""]
    lines += [f"![{name}]({name})" for name in images]
    return "\n".join(lines) + "\n"


def write_report(study: optuna.Study, tune: TuneConfig) -> dict:
    summary = summarize(study, tune)
    best = next(t for t in study.trials if t.number == summary["best"]["trial"])
    atomic.write_json(tune.dir / BEST_CONFIG_FILE, best_config(best))
    images = plots(study, tune.dir)
    atomic.write_text(tune.dir / REPORT_FILE, markdown(study, tune, summary, images))
    atomic.write_json(tune.dir / "tuning_summary.json", summary)
    return summary
