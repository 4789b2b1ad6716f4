"""The layout of a training run folder: the one place that knows what the files in it are and mean.

``train_script.py`` writes, into its run folder (``<model>-finetuned/`` or ``--output-dir``)::

    training_config.json        the TrainConfig as trained (plus library versions)
    run.json                    the run's state, rewritten atomically at start, at each checkpoint, at the end:
                                  {"format": 1, "status": "running" | "finished" | "stopped" | "failed",
                                   "stop_reason": null | "signal" | "stop-file" | "<observer's reason>",
                                   "error": null | "<one line: type: message>",
                                   "base_model": config.model, "model_path": the local folder loaded,
                                   "quantization": "nf4" | "none", "precision": "bf16" | "fp32",
                                   "step": int, "total_steps": int, "best": {"step": int|null, "loss": float|null},
                                   "last_eval_loss": float|null, "tokens_per_s": float|null,
                                   "train_file": str, "validation_file": str,
                                   "pid": int, "host": str, "command": [argv...],
                                   "started": unix seconds, "updated": unix seconds, "ended": unix seconds|null}
    heartbeat.json              {"pid": int, "host": str, "updated": unix seconds}: rewritten every
                                HEARTBEAT_SECONDS by a thread of the training process while it lives
    metrics.jsonl               one JSON object per line, flushed per line:
                                  {"kind": "train", "step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s",
                                   "seconds_per_step", "elapsed", "eta_s", "coverage", "entropy", "time"}
                                  {"kind": "eval", "step", "epoch", "loss", "perplexity", "elapsed", "time"}
                                on resume, lines past the checkpoint's step are dropped (the rerun writes them again)
    STOP                        written by anyone (the studio page, a user): the trainer finishes its step,
                                checkpoints and exits 0 with status "stopped"; removed when honoured
    train.log                   the log
    training_metrics.json       the loss history at the end (also in final/ and each checkpoint); what runs from
                                before run.json and metrics.jsonl are read from
    checkpoint-<step>/          complete checkpoints (rhizome.train.checkpoint)
    best/, final/               adapters: best validation loss so far; the run's result
    eval_report.json/.md        evaluate.py's report on this run (its default output folder)

A run whose run.json says "running" but whose heartbeat is older than STALE_SECONDS (or whose pid is gone,
on the same host) is shown as "dead": it was killed without a chance to say so. A folder without run.json
(a run from before it existed, or one not started) is "finished" when it has final/, else "new".

Reading (never raising on a damaged file: what cannot be read is None or "unknown")::

    run = Run.load("SmolLM2-135M-Instruct-finetuned")   # status, base model, 4-bit, steps, losses, checkpoints
    find_runs(".")                                       # every run folder here, newest first
    newest_adapter(".", base_model)                      # THE rule for which adapter a stage uses when none is named
    resolve_adapter(path)                                # an adapter or run folder the user named
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from rhizome import atomic
from rhizome.errors import UserError

RUN_STATE_FILE = "run.json"
HEARTBEAT_FILE = "heartbeat.json"
METRICS_FILE = "metrics.jsonl"
STOP_FILE = "STOP"
CONFIG_FILE = "training_config.json"
LOG_FILE = "train.log"
RUN_STATE_FORMAT = 1
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 60.0
STATUSES = ("running", "finished", "stopped", "failed", "dead")
NEW_STATUS = "new"  # a folder without run.json: made before run.json existed, or not started yet
QUANTIZATIONS = ("nf4", "none")
FINAL_DIR = "final"
BEST_DIR = "best"
EVAL_REPORT_FILE = "eval_report.json"
HISTORY_FILE = "training_metrics.json"  # the trainer's loss history, the only record of runs from before run.json
ADAPTER_CONFIG_FILE = "adapter_config.json"  # PEFT's name, the mark of a folder holding LoRA weights


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _number(value) -> float | None:
    return float(value) if type(value) in (int, float) and math.isfinite(value) else None


def _integer(value) -> int | None:
    return value if type(value) is int else None


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _adapter_dir(folder: Path) -> Path | None:
    return folder if (folder / ADAPTER_CONFIG_FILE).is_file() else None


def _process_gone(pid: int | None, host: str | None) -> bool:
    """Whether a pid recorded on this machine no longer runs (a pid on another host cannot be checked)."""
    if pid is None or pid <= 0 or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # PermissionError: it runs, under another user
    return False


def _status(state: dict, heartbeat: dict, updated: float | None, has_final: bool) -> str:
    status = state.get("status")
    if status not in STATUSES:
        return "finished" if has_final else NEW_STATUS
    if status != "running":
        return status
    if updated is None or time.time() - updated > STALE_SECONDS:
        return "dead"
    pid = _integer(heartbeat.get("pid")) or _integer(state.get("pid"))
    host = _text(heartbeat.get("host")) or _text(state.get("host"))
    return "dead" if _process_gone(pid, host) else "running"


def _history(path: Path) -> dict:
    """The train and eval records (empty lists when unreadable) and the best of the run's training_metrics.json."""
    history = _read_json(path / HISTORY_FILE) or {}
    records = {}
    for kind in ("train", "eval"):
        found = history.get(kind)
        records[kind] = [r for r in found if isinstance(r, dict)] if isinstance(found, list) else []
    records["best"] = history.get("best")
    return records


def _progress_from_history(history: dict, finished: bool) -> dict:
    """run.json's progress fields as the history of a run from before run.json tells them."""
    train, evals = history["train"], history["eval"]
    step = train[-1].get("step") if train else None
    return {"step": step, "total_steps": step if finished else None, "best": history["best"],
            "last_eval_loss": evals[-1].get("loss") if evals else None,
            "tokens_per_s": train[-1].get("tokens_per_s") if train else None}


def _quantization(state: dict, config: dict) -> str:
    # Only structured settings count: an "auto" run's resolved choice is known from run.json alone.
    for value in (state.get("quantization"), config.get("quantization")):
        if value in QUANTIZATIONS:
            return value
    return "unknown"


@dataclass(frozen=True)
class Run:
    """A training run folder as its files describe it; see the module docstring for the layout."""

    path: Path
    name: str
    status: str
    config: dict
    base_model: str | None
    quantization: str
    step: int
    total_steps: int
    best_step: int | None
    best_loss: float | None
    last_eval_loss: float | None
    tokens_per_s: float | None
    train_file: str | None
    error: str | None
    stop_reason: str | None
    updated: float | None

    @classmethod
    def load(cls, path: str | os.PathLike, name: str | None = None) -> Run:
        """Read the run in ``path``; a damaged or missing file leaves its fields None / "unknown", never raises."""
        path = Path(path)
        state = _read_json(path / RUN_STATE_FILE)
        config = _read_json(path / CONFIG_FILE) or {}
        heartbeat = _read_json(path / HEARTBEAT_FILE) or {}
        final = _adapter_dir(path / FINAL_DIR)
        if state is not None:
            signs = [_number(heartbeat.get("updated")), _number(state.get("updated"))]
        else:  # a run from before run.json (or with it unreadable): its files' times are the only sign of life
            signs = [_mtime(path / name) for name in (CONFIG_FILE, LOG_FILE)]
            signs.append(_mtime(final / ADAPTER_CONFIG_FILE) if final else None)
            state = _progress_from_history(_history(path), finished=final is not None)
        updated = max((s for s in signs if s is not None), default=None)
        best = state.get("best") if isinstance(state.get("best"), dict) else {}
        adapter_config = (_read_json(final / ADAPTER_CONFIG_FILE) if final else None) or {}
        base_model = (_text(state.get("base_model")) or _text(config.get("model"))
                      or _text(adapter_config.get("base_model_name_or_path")))
        return cls(
            path=path, name=name or Path(os.path.abspath(path)).name, status=_status(state, heartbeat, updated, final is not None),
            config=config, base_model=base_model, quantization=_quantization(state, config),
            step=_integer(state.get("step")) or 0, total_steps=_integer(state.get("total_steps")) or 0,
            best_step=_integer(best.get("step")), best_loss=_number(best.get("loss")),
            last_eval_loss=_number(state.get("last_eval_loss")), tokens_per_s=_number(state.get("tokens_per_s")),
            train_file=_text(state.get("train_file")) or _text(config.get("train_file")),
            error=_text(state.get("error")), stop_reason=_text(state.get("stop_reason")), updated=updated)

    @property
    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        # Imported here: rhizome.train loads torch, which listing runs (the chat, the studio page) does not need.
        from rhizome.train.checkpoint import checkpoints, is_complete

        return [folder for _, folder in checkpoints(self.path) if is_complete(folder)]

    @property
    def final(self) -> Path | None:
        return _adapter_dir(self.path / FINAL_DIR)

    @property
    def best(self) -> Path | None:
        return _adapter_dir(self.path / BEST_DIR)

    def metrics(self) -> list[dict]:
        """The records of metrics.jsonl; a line being written (or damaged) is left out. A run from before
        metrics.jsonl gives its training_metrics.json history in the same form."""
        try:
            with open(self.path / METRICS_FILE, encoding="utf-8", errors="replace") as handle:
                lines = handle.readlines()
        except FileNotFoundError:
            history = _history(self.path)
            records = [{"kind": kind, **record} for kind in ("train", "eval") for record in history[kind]]
            # An evaluation follows the optimizer step of the same number, as in metrics.jsonl.
            return sorted(records, key=lambda record: (_number(record.get("step")) or 0, record["kind"] == "eval"))
        except OSError:
            return []
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of train.log ("" when there is none), read from the end of the file."""
        if lines <= 0:
            return ""
        try:
            with open(self.path / LOG_FILE, "rb") as handle:
                end = handle.seek(0, os.SEEK_END)
                chunk, data = 8192, b""
                # Grow the window from the end until it holds enough lines: a page polls this during long runs.
                while True:
                    start = max(0, end - chunk)
                    handle.seek(start)
                    data = handle.read(end - start)
                    if start == 0 or data.count(b"\n") > lines:
                        break
                    chunk *= 4
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])

    def eval_report(self) -> dict | None:
        return _read_json(self.path / EVAL_REPORT_FILE)


def is_run_dir(path: str | os.PathLike) -> bool:
    """A folder train_script.py wrote: it has training_config.json or run.json (or, copied without them, final/)."""
    path = Path(path)
    return path.is_dir() and ((path / CONFIG_FILE).is_file() or (path / RUN_STATE_FILE).is_file()
                              or _adapter_dir(path / FINAL_DIR) is not None)


def find_runs(root: str | os.PathLike = ".", nested: bool = False) -> list[Run]:
    """Every run folder directly under ``root``, newest first (by its last sign of life).

    ``nested`` also lists the runs one folder further down, inside folders that are not runs themselves (a
    tuning study's ``tuning/trial-0003``), named by their path from ``root``; hidden folders are skipped."""
    root = Path(root)
    found: list[tuple[Path, str]] = []
    try:
        for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if is_run_dir(child):
                found.append((child, child.name))
            elif nested:
                found += [(inner, f"{child.name}/{inner.name}") for inner in sorted(child.iterdir())
                          if not inner.name.startswith(".") and is_run_dir(inner)]
    except OSError:
        return []
    runs = [Run.load(folder, name) for folder, name in found]
    return sorted(runs, key=lambda run: run.updated or 0.0, reverse=True)


def request_stop(run_dir: str | os.PathLike) -> None:
    """Ask the training in ``run_dir`` to checkpoint and stop after its current step."""
    atomic.write_text(Path(run_dir) / STOP_FILE, f"stop requested at {time.time():.0f}\n")


def same_model(a: str, b: str) -> bool:
    """Whether two names are the same base model: an id, the local folder it was converted into, a .gguf."""
    # PEFT records the folder the base was loaded from (models cache / SmolLM2-135M-Instruct), training_config.json
    # the id given, so only the last path component is compared.
    def stem(name: str) -> str:
        return Path(name.rstrip("/\\")).name.removesuffix(".gguf").lower()

    return stem(a) == stem(b)


def newest_adapter(root: str | os.PathLike, base_model: str | None) -> tuple[Path | None, str]:
    """The adapter chat, evaluate, export and the studio use when none is named: (final/ folder or None, why).

    Among the run folders directly under ``root`` that have a final/ adapter (whatever their status: a run that
    is running again after finishing keeps its final/), the one whose final/ was written last; with
    ``base_model``, only runs trained on it (or that do not say what they were trained on) are considered."""
    with_final = [run for run in find_runs(root) if run.final is not None]
    with_final.sort(key=lambda run: _mtime(run.final / ADAPTER_CONFIG_FILE) or 0.0, reverse=True)
    if not with_final:
        return None, (f"No trained adapter found in {Path(root).resolve()} (no run folder with a final/ adapter). "
                      "Train one with python train_script.py.")
    fitting = [run for run in with_final
               if not base_model or run.base_model is None or same_model(run.base_model, base_model)]
    if not fitting:
        found = ", ".join(f"{run.name} (trained on {run.base_model})" for run in with_final)
        return None, f"No adapter trained on {base_model} here (found {found})."
    chosen = fitting[0]
    on = f" trained on {base_model}" if base_model else ""
    others = f"; {len(with_final) - 1} other(s) ignored" if len(with_final) > 1 else ""
    return chosen.final, f"Adapter {chosen.final} (the newest{on}{others})."


class AdapterNotFoundError(UserError, FileNotFoundError):
    """A named adapter or run folder that holds no LoRA adapter (a FileNotFoundError too, for older callers)."""


def resolve_adapter(given: str) -> tuple[Path, Run | None]:
    """(adapter folder, the run it belongs to or None) for a folder the user named: a run folder (its final/), or
    a folder with LoRA weights (final/, best/, checkpoint-N/, or one from elsewhere)."""
    path = Path(given).expanduser()
    if _adapter_dir(path) is not None:
        run_dir = path.parent if is_run_dir(path.parent) and path.parent.resolve() != path.resolve() else None
        return path, Run.load(run_dir) if run_dir is not None else None
    if not path.exists():
        raise AdapterNotFoundError(
            f"adapter not found: {given}. Train one with python train_script.py (it writes <model>-finetuned/final/), "
            "or name a run folder or its final/, best/ or checkpoint-N/ folder.")
    run = Run.load(path)
    if run.final is not None:
        return run.final, run
    # A run stopped or killed before final/ still has checkpoints with usable LoRA weights.
    started = [folder for folder in sorted(path.glob("checkpoint-*"), key=_checkpoint_step) if _adapter_dir(folder)]
    hint = (f"; training has not finished: use its latest checkpoint, {started[-1]}, or resume training with the "
            "same command" if started else "")
    raise AdapterNotFoundError(f"{given} holds no LoRA adapter (no {ADAPTER_CONFIG_FILE}, no final/){hint}")


def _checkpoint_step(folder: Path) -> int:
    step = folder.name.removeprefix("checkpoint-")
    return int(step) if step.isdigit() else -1
