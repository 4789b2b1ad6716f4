"""training_plots.png (9 panels) and loss_focused.png from the metrics history, with matplotlib's Agg backend."""

from __future__ import annotations

import io
from pathlib import Path

from rhizome import atomic


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    atomic.write_bytes(path, buffer.getvalue())


def _series(rows: list[dict], key: str) -> tuple[list, list]:
    points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_training(history: dict, tracker_state: dict, folder: Path) -> None:
    plt = _pyplot()
    train, evals = history.get("train", []), history.get("eval", [])
    fig, axes = plt.subplots(3, 3, figsize=(15, 11))
    panels = [
        ("Training loss", train, "loss", "C0"), ("Validation loss", evals, "loss", "C1"),
        ("Learning rate", train, "lr", "C2"), ("Gradient norm", train, "grad_norm", "C3"),
        ("Tokens / s (real)", train, "tokens_per_s", "C4"), ("Theme coverage", train, "coverage", "C5"),
        ("Theme entropy (nats)", train, "entropy", "C6"),
    ]
    for ax, (title, rows, key, color) in zip(axes.flat, panels):
        x, y = _series(rows, key)
        ax.plot(x, y, color=color, marker="o" if len(x) < 30 else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)

    ax = axes.flat[7]
    dataset = tracker_state.get("dataset_counts", {})
    seen = tracker_state.get("seen_counts", {})
    top = list(dataset)[:15]
    if top:
        total_d, total_s = sum(dataset.values()) or 1, sum(seen.values()) or 1
        positions = range(len(top))
        ax.barh([p + 0.2 for p in positions], [dataset[t] / total_d for t in top], height=0.4, label="dataset")
        ax.barh([p - 0.2 for p in positions], [seen.get(t, 0) / total_s for t in top], height=0.4, label="seen")
        ax.set_yticks(list(positions), top, fontsize=7)
        ax.invert_yaxis()
        ax.legend(fontsize=8)
    ax.set_title("Theme share: seen vs dataset (top 15)")

    ax = axes.flat[8]
    x, y = _series(train, "packing_efficiency")
    ax.plot(x, y, color="C8", label="this run")
    x, y = _series(train, "padded_efficiency")
    if x:
        ax.plot(x, y, color="C7", linestyle="--", label="padding only")
    ax.set_ylim(0, 1.05)
    ax.set_title("Packing efficiency (real tokens / slots)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    fig.tight_layout()
    _save(fig, folder / "training_plots.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 6))
    x, y = _series(train, "loss")
    ax.plot(x, y, label="train", alpha=0.8)
    x, y = _series(evals, "loss")
    ax.plot(x, y, label="validation", marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title("Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, folder / "loss_focused.png")
    plt.close(fig)
