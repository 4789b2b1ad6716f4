"""per_theme_perplexity.png, rare_vs_common.png (and qa_accuracy.png with --qa: exact match and the gold
answer's likelihood) from an evaluation report, with matplotlib's Agg backend."""

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


def _interval_bars(ax, x, width: float, stats: list[dict], scale: float, **style) -> None:
    """Bars at ``x`` of each stat's mean with its 95% interval as error bars (None: no bar)."""
    means, low, high = (np.array([np.nan if s[key] is None else scale * s[key] for s in stats])
                        for key in ("mean", "low", "high"))
    ax.bar(x, means, width, yerr=[means - low, high - means], capsize=3, **style)


def plot_qa(qa: dict, path: Path) -> Path:
    """Per condition with its 95% interval (all, PDF, conversation questions): exact match, and the gold answer's
    log-probability per token after the chat's prompt; retrieval recall beside them."""
    plt = _pyplot()
    kinds = ("all", "pdf", "conversation")
    summary = qa["summary"]
    fig, (accuracy, likelihood, recall) = plt.subplots(1, 3, figsize=(17, 4.8),
                                                       gridspec_kw={"width_ratios": [3, 3, 1]})
    labels = list(qa["conditions"])
    width = 0.8 / len(labels)
    x = np.arange(len(kinds))
    for j, label in enumerate(labels):
        offset = x + (j - (len(labels) - 1) / 2) * width
        _interval_bars(accuracy, offset, width, [summary[k]["conditions"][label]["exact_match"] for k in kinds], 100,
                       label=label, color=f"C{j}")
        _interval_bars(likelihood, offset, width, [summary[k]["conditions"][label]["gold_logprob"] for k in kinds],
                       1, label=label, color=f"C{j}")
    ticks = [f"{kind} ({summary[kind]['questions']} q)" for kind in kinds]
    accuracy.set_ylim(0, 105)  # on the same scale as recall, also when every bar is 0
    accuracy.set_ylabel("exact match (%)")
    accuracy.set_title("Answers containing the gold span, 95% bootstrap interval")
    likelihood.axhline(0, color="black", linewidth=0.8)
    likelihood.set_ylabel("mean log-prob per gold token (nats)")
    likelihood.set_title("Gold answer as the reply to the chat's prompt (higher is better)")
    accuracy.legend(fontsize=8)  # once: the likelihood panel's bars hang down from 0, where a legend would hide them
    for ax in (accuracy, likelihood):
        ax.set_xticks(x)
        ax.set_xticklabels(ticks)
        ax.grid(axis="y", alpha=0.3)
    _interval_bars(recall, x, 0.6, [summary[kind]["recall_at_k"] for kind in kinds], 100, color="C7")
    recall.set_xticks(x)
    recall.set_xticklabels(kinds)
    recall.set_ylim(0, 105)
    recall.set_ylabel(f"recall@{qa['settings']['k']} (%)")
    recall.set_title("Gold sentence retrieved")
    recall.grid(axis="y", alpha=0.3)
    return _save(plt, fig, path)
