"""preference_plots.png: DPO's or ORPO's own curves (loss, reward accuracy, reward margin, chosen / rejected log-probs)."""

from __future__ import annotations

from pathlib import Path

from rhizome.train.plots import _pyplot, _save, _series

PLOT_FILE = "preference_plots.png"


def plot_preferences(history: dict, folder: Path, method: str = "dpo") -> None:
    plt = _pyplot()
    train, evals = history.get("train", []), history.get("eval", [])
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    reward = "beta x log-ratio to the reference" if method == "dpo" else "beta x mean log-prob per token"
    panels = [(f"{method.upper()} loss", "loss", "loss"), ("Reward accuracy", "reward_accuracy", "reward_accuracy"),
              (f"Reward margin ({reward})", "reward_margin", "reward_margin")]
    for ax, (title, train_key, eval_key) in zip(axes.flat, panels):
        for rows, key, label in ((train, train_key, "train"), (evals, eval_key, "validation")):
            x, y = _series(rows, key)
            ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes.flat[3]
    for key, label in (("logps_chosen", "chosen"), ("logps_rejected", "rejected")):
        for rows, style, split in ((train, "-", "train"), (evals, "--", "validation")):
            x, y = _series(rows, key)
            ax.plot(x, y, style, label=f"{label} ({split})")
    ax.set_title("Reply log-probability (summed over its tokens)")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, folder / PLOT_FILE)
    plt.close(fig)
