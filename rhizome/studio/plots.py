"""The Watch and Compare curves as long-format tables (x, y, series) that ``gr.LinePlot`` draws.

The raw training loss of a small batch is noisy, so each loss curve also has a smoothed one: an exponential
moving average, debiased at the start as TensorBoard's smoothing slider does, so the first points are not
pulled towards zero.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import pandas as pd

SMOOTHING = 0.6
COLUMNS = ["step", "value", "series"]


def smoothed(values: Sequence[float], weight: float = SMOOTHING) -> list[float]:
    """Debiased exponential moving average of ``values`` (TensorBoard's scalar smoothing)."""
    out, average = [], 0.0
    for n, value in enumerate(values, 1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** n))
    return out


def _points(records: Iterable[dict], kind: str, key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], float(r[key])) for r in records
             if r.get("kind") == kind and isinstance(r.get(key), (int, float)) and isinstance(r.get("step"), int)]
    return [s for s, _ in pairs], [v for _, v in pairs]


def _frame(rows: list[tuple[int, float, str]], series: Sequence[str] = ()) -> pd.DataFrame:
    """The rows as a typed table, with one empty (NaN) row per expected series in front.

    The page's plot fixes its axes' kinds and its colours from the first table it draws (an empty one at page load):
    a series missing from it is drawn without a colour, so every table names all of them. Vega leaves the NaN
    rows out of the curves and the axes."""
    rows = [(0, math.nan, name) for name in series] + rows
    return pd.DataFrame(rows, columns=COLUMNS).astype({"step": "int64", "value": "float64", "series": "str"})


def loss_frame(records: Sequence[dict], prefix: str = "") -> pd.DataFrame:
    """Training and validation loss, raw and smoothed; ``prefix`` (a run's name) keeps runs apart in Compare."""
    rows, names = [], []
    for kind, name in (("train", "loss"), ("eval", "validation loss")):
        steps, values = _points(records, kind, "loss")
        rows += [(s, v, f"{prefix}{name}") for s, v in zip(steps, values)]
        rows += [(s, v, f"{prefix}{name} (smoothed)") for s, v in zip(steps, smoothed(values))]
        names += [f"{prefix}{name}", f"{prefix}{name} (smoothed)"]
    return _frame(rows, names)


def scalar_frame(records: Sequence[dict], key: str, name: str) -> pd.DataFrame:
    """One training scalar (learning rate, tokens/s, theme coverage) against the step."""
    steps, values = _points(records, "train", key)
    return _frame([(s, v, name) for s, v in zip(steps, values)], [name])


def compare_frame(runs_records: dict[str, Sequence[dict]]) -> pd.DataFrame:
    """The smoothed training loss and the validation loss of several runs, one colour per run and curve."""
    rows = []
    for run_name, records in runs_records.items():
        steps, values = _points(records, "train", "loss")
        rows += [(s, v, f"{run_name}: loss (smoothed)") for s, v in zip(steps, smoothed(values))]
        steps, values = _points(records, "eval", "loss")
        rows += [(s, v, f"{run_name}: validation loss") for s, v in zip(steps, values)]
    curves = ("loss (smoothed)", "validation loss")
    return _frame(rows, [f"{name}: {curve}" for name in runs_records for curve in curves])
