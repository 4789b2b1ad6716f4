"""Iterative proportional fitting (IPF): rescale a table until its margins match target margins.

Given a non-negative table and target sums along some axes, IPF repeatedly
multiplies each slice by (target / current sum), one margin after another. For
consistent targets it converges to the table closest to the original (in the
Kullback-Leibler sense) that has exactly those margins; cells that start at
zero stay zero. Theme weighting (``rhizome.format.themes``) uses it on the
theme x source table; ``tests/format/test_ipf.py`` checks it against the
``ipfn`` package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IPFResult:
    table: np.ndarray
    converged: bool
    iterations: int  # full sweeps over all margins
    max_error: float  # largest |fitted margin / target - 1| over all target cells


def _margin(table: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    summed = tuple(a for a in range(table.ndim) if a not in axes)
    return table.sum(axis=summed)


def _max_error(table: np.ndarray, targets: Sequence[np.ndarray], axes: Sequence[tuple[int, ...]]) -> float:
    worst = 0.0
    for target, keep in zip(targets, axes):
        margin = _margin(table, keep)
        positive = target > 0
        if np.any(margin[~positive] > 0):
            return float("inf")
        if positive.any():
            worst = max(worst, float(np.max(np.abs(margin[positive] / target[positive] - 1.0))))
    return worst


def ipf(table: np.ndarray, targets: Sequence[np.ndarray], axes: Sequence[int | Sequence[int]],
        tol: float = 1e-10, max_iter: int = 1000) -> IPFResult:
    """Fit ``table`` to ``targets[k]``, the sums that keep the axes ``axes[k]`` (the others summed over).

    For a 2-D table, ``ipf(t, [rows, cols], [0, 1])`` matches row sums to ``rows``
    and column sums to ``cols``. Targets must all have the same total. Stops when
    every fitted margin is within ``tol`` (relative) of its target, or after
    ``max_iter`` sweeps; ``converged`` says which. A target cell > 0 whose slice
    of the table is all zeros can never be met, so that fit reports not converged.
    """
    fitted = np.array(table, dtype=np.float64)
    if np.any(fitted < 0) or not np.all(np.isfinite(fitted)):
        raise ValueError("ipf: the table must be finite and non-negative")
    if len(targets) != len(axes):
        raise ValueError("ipf: one axes entry per target")
    goals, keep_axes = [], []
    for target, keep in zip(targets, axes):
        keep = tuple(int(a) for a in keep) if isinstance(keep, Sequence) else (int(keep),)
        goal = np.asarray(target, dtype=np.float64)
        expected = tuple(fitted.shape[a] for a in keep)
        if goal.shape != expected:
            raise ValueError(f"ipf: target for axes {keep} has shape {goal.shape}, expected {expected}")
        if np.any(goal < 0):
            raise ValueError("ipf: targets must be non-negative")
        goals.append(goal.transpose(np.argsort(keep)))  # margins come out with their axes in increasing order
        keep_axes.append(tuple(sorted(keep)))
    totals = [float(g.sum()) for g in goals]
    if totals and not np.allclose(totals, totals[0], rtol=1e-9, atol=0.0):
        raise ValueError(f"ipf: targets have different totals {totals}; no table can meet them all")

    error = _max_error(fitted, goals, keep_axes)
    iterations = 0
    while error > tol and iterations < max_iter:
        for goal, keep in zip(goals, keep_axes):
            margin = _margin(fitted, keep)
            factor = np.divide(goal, margin, out=np.zeros_like(goal), where=margin > 0)
            shape = [fitted.shape[a] if a in keep else 1 for a in range(fitted.ndim)]
            fitted *= factor.reshape(shape)
        iterations += 1
        error = _max_error(fitted, goals, keep_axes)
    return IPFResult(table=fitted, converged=error <= tol, iterations=iterations, max_error=error)
