"""Bench runs in stages that survive a rerun: each stage's result is saved in the bench's output folder as
``<stage>.json``, with the settings it was computed from and how long it took, and a rerun with the same settings
reuses it, so an hour-long bench stopped midway resumes at the stage it was in."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rhizome import atomic
from rhizome.log import get_logger

log = get_logger("bench.stages")


def stage(out: Path, name: str, settings: dict, compute):
    """``compute()``'s result, or the one saved by an earlier run with the same settings."""
    path = out / f"{name}.json"
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("settings") == settings:
            log.info("%s: reusing %s", name, path)
            return saved["result"]
    started = time.perf_counter()
    result = compute()
    seconds = round(time.perf_counter() - started, 1)
    log.info("%s: %.0f s", name, seconds)
    atomic.write_json(path, {"settings": settings, "result": result, "seconds": seconds})
    return result
