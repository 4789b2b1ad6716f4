"""Complete, atomic checkpoints: ``<run>/checkpoint-<step>/`` holds everything a resume needs.

    adapter_model.safetensors, adapter_config.json   the LoRA weights (PeftModel.from_pretrained loads them)
    optimizer.pt, scheduler.pt                       AdamW moments, learning-rate schedule position
    rng_state.pth                                    Python, NumPy, torch (and CUDA) generator states
    theme_tracker_state.json                         theme counts seen so far
    training_metrics.json                            the loss / lr / grad-norm / throughput history
    trainer_state.json                               step, epoch, data position, sampler, best eval, number of
                                                     processes (a resume needs as many); written last

A checkpoint is written into a hidden ``.checkpoint-<step>.*.tmp`` folder and renamed when complete, so a kill
during saving leaves at most a temporary folder (removed on the next start); resume also checks every
file is there and skips, with a warning, any checkpoint that is not.

Evaluation and export take any folder holding LoRA weights (``final/``, ``best/``, ``checkpoint-N/``) or a run
folder, meaning its ``final/``: :func:`adapter_folder`.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rhizome import atomic
from rhizome.log import get_logger

log = get_logger(__name__)

STATE_FILE = "trainer_state.json"
ADAPTER_CONFIG = "adapter_config.json"
REQUIRED_FILES = ("adapter_model.safetensors", ADAPTER_CONFIG, "optimizer.pt", "scheduler.pt",
                  "rng_state.pth", "theme_tracker_state.json", "training_metrics.json", STATE_FILE)
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Finished checkpoint folders, oldest first (complete or not: see :func:`is_complete`)."""
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def adapter_folder(path: Path) -> Path | None:
    """The LoRA adapter ``path`` names: itself when it holds adapter_config.json, else its ``final/`` when that
    does (``path`` is a run folder), else None."""
    for folder in (path, path / "final"):
        if (folder / ADAPTER_CONFIG).is_file():
            return folder
    return None


def is_complete(path: Path) -> bool:
    if not all((path / name).is_file() for name in REQUIRED_FILES):
        return False
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return f"checkpoint-{state.get('step')}" == path.name


def latest_checkpoint(run_dir: Path) -> Path | None:
    for _, path in reversed(checkpoints(run_dir)):
        if is_complete(path):
            return path
        log.warning("skipping incomplete checkpoint %s", path)
    return None


def remove_partial(run_dir: Path) -> None:
    """Temporary folders (of checkpoints, best/, final/) left by a run killed while saving."""
    if run_dir.is_dir():
        for path in run_dir.glob(".*.tmp*"):
            shutil.rmtree(path, ignore_errors=True)


def write_checkpoint(run_dir: Path, step: int, write: Callable[[Path], None]) -> Path:
    """Call ``write(folder)`` on a temporary folder, then rename it to ``checkpoint-<step>``."""
    return atomic.write_dir(run_dir / f"checkpoint-{step}", write)


def rotate(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    if keep <= 0:
        return
    for _, path in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(legacy=False), "torch": torch.get_rng_state()}
    state["numpy"] = {**state["numpy"], "state": {k: torch.from_numpy(np.asarray(v, dtype=np.int64)) if k == "key" else v
                                                  for k, v in state["numpy"]["state"].items()}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {k: v.numpy().astype(np.uint32) if k == "key" else v for k, v in numpy_state["state"].items()}
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_rng_state(path: Path) -> None:
    torch.save(rng_state(), path)


def load_rng_state(path: Path) -> None:
    set_rng_state(torch.load(path, weights_only=True))
