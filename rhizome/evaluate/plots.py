"""per_theme_perplexity.png, rare_vs_common.png (and qa_accuracy.png with --qa) from an evaluation report, with
matplotlib's Agg backend."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from rhizome import atomic
from rhizome.evaluate.report import featured_themes

PER_THEME_PNG = "per_theme_perplexity.png"
RARE_VS_COMMON_PNG = "rare_vs_common.png"
QA_PNG = "qa_accuracy.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    atomic.write_bytes(path, buffer.getvalue())
    return path


def _bars(ax, labels: list[str], series: dict[str, list], ylabel: str, rotation: int = 45) -> None:
    """Grouped bars: one group per label, one bar per model; missing values (None) are left out."""
    width = 0.8 / max(1, len(series))
    x = np.arange(len(labels))
    for k, (name, values) in enumerate(series.items()):
        heights = [np.nan if v is None else v for v in values]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, heights, width, label=name, color=f"C{k}")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=rotation, ha="right" if rotation else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)


def plot_report(report: dict, folder: Path, themes_per_panel: int = 12) -> list[Path]:
    plt = _pyplot()
    models = report["models"]
    counts = report["theme_train_pairs"]
    frequent, rare = featured_themes(report, themes_per_panel)

    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5))
    limit = report["rare_max_pairs"]
    panels = [(axes[0], frequent, "Most frequent themes in training", f"no test theme has > {limit} training pairs"),
              (axes[1], rare, f"Rare themes (<= {limit} training pairs)", "no rare theme in the test split")]
    for ax, themes, title, empty in panels:
        ax.set_title(title)
        if not themes:
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        _bars(ax, [f"{t} ({counts[t]})" for t in themes],
              {name: [m["per_theme"][t]["perplexity"] for t in themes] for name, m in models.items()},
              "test perplexity")
        ax.legend(fontsize=8)
    fig.suptitle("Per-theme test perplexity, base vs adapters (training pairs per theme in brackets)")
    written = [_save(plt, fig, folder / PER_THEME_PNG)]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    groups = ["overall", "rare", "common"]
    labels = [f"{g} ({models['base'][g]['pairs']} pairs)" for g in groups]
    perplexity = {n: [m[g]["perplexity"] for g in groups] for n, m in models.items()}
    accuracy = {n: [None if m[g]["token_accuracy"] is None else 100 * m[g]["token_accuracy"] for g in groups]
                for n, m in models.items()}
    _bars(axes[0], labels, perplexity, "test perplexity", rotation=0)
    axes[0].set_title("Perplexity on assistant tokens (lower is better)")
    _bars(axes[1], labels, accuracy, "next-token accuracy (%)", rotation=0)
    axes[1].set_title("Next-token accuracy on assistant tokens")
    for ax in axes:
        ax.legend(fontsize=8)
    written.append(_save(plt, fig, folder / RARE_VS_COMMON_PNG))
    if "qa" in report:
        written.append(plot_qa(report["qa"], folder / QA_PNG))
    return written


def plot_qa(qa: dict, path: Path) -> Path:
    """Exact match per condition with its 95% interval (all, PDF, conversation questions), retrieval recall beside."""
    plt = _pyplot()
    kinds = ("all", "pdf", "conversation")
    summary = qa["summary"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 1]})
    labels = list(qa["conditions"])
    width = 0.8 / len(labels)
    x = np.arange(len(kinds))
    for j, label in enumerate(labels):
        stats = [summary[kind]["conditions"][label]["exact_match"] for kind in kinds]
        means = np.array([np.nan if s["mean"] is None else 100 * s["mean"] for s in stats])
        low = np.array([np.nan if s["low"] is None else 100 * s["low"] for s in stats])
        high = np.array([np.nan if s["high"] is None else 100 * s["high"] for s in stats])
        left.bar(x + (j - (len(labels) - 1) / 2) * width, means, width, yerr=[means - low, high - means],
                 capsize=3, label=label, color=f"C{j}")
    left.set_xticks(x)
    left.set_xticklabels([f"{kind} ({summary[kind]['questions']} q)" for kind in kinds])
    left.set_ylim(0, 105)  # on the same scale as recall, also when every bar is 0
    left.set_ylabel("exact match (%)")
    left.set_title("Answers containing the gold span, 95% bootstrap interval")
    left.legend(fontsize=8)
    left.grid(axis="y", alpha=0.3)
    recall = [summary[kind]["recall_at_k"] for kind in kinds]
    means = np.array([np.nan if r["mean"] is None else 100 * r["mean"] for r in recall])
    low = np.array([np.nan if r["low"] is None else 100 * r["low"] for r in recall])
    high = np.array([np.nan if r["high"] is None else 100 * r["high"] for r in recall])
    right.bar(x, means, 0.6, yerr=[means - low, high - means], capsize=3, color="C7")
    right.set_xticks(x)
    right.set_xticklabels(kinds)
    right.set_ylim(0, 105)
    right.set_ylabel(f"recall@{qa['settings']['k']} (%)")
    right.set_title("Gold sentence retrieved")
    right.grid(axis="y", alpha=0.3)
    return _save(plt, fig, path)
