"""The evaluation report: ``eval_report.json`` (everything), ``eval_report.md`` (tables) and the plots.

``eval_report.json``::

    {"format": "rhizome.eval_report", "version": 1, "config": {...EvalConfig}, "base_model": str,
     "adapters": {name: folder}, "device": str, "test": {"pairs", "tokens", "truncated", "dropped_no_target"},
     "rare_max_pairs": int, "rare_rule": "all"|"any", "rare_themes": [theme...],
     "theme_train_pairs": {test theme: training pairs carrying it},
     "pair_ids": [test pair id...], "groups": {"rare" | "common": [index into pair_ids...]},
     "models": {"base" | adapter name: {
         "overall" | "rare" | "common": {"loss", "perplexity", "token_accuracy", "tokens", "pairs"},
         "per_theme": {theme: {same}}, "trained_on": {"coverage", "entropy", "themes_seen", "themes_total",
         "source"} | None, "adapter": folder | None, "seconds": float,
         "per_pair": {"loss_sum" (nats), "correct", "tokens": [one value per pair_ids entry]}}},
     "seconds": float, "qa": {...} (with --qa, see ``qa_report.py``),
     "preferences": {"file", "pairs", "models": {name: {"pairs", "accuracy", "mean_margin", "per_kind": {kind:
         {"pairs", "accuracy", "mean_margin"}}, "margins": [chosen - rejected log-prob per pair]}}}
         (when held-out preference pairs exist, see ``preferences.py``)}

Loss is mean cross-entropy in nats per assistant token; rates are None where a group has no tokens.
``per_pair`` keeps each test pair's sums, so paired statistics (a bootstrap over pairs) need no rerun.
"""

from __future__ import annotations

from pathlib import Path

from rhizome import atomic
from rhizome.config import to_dict

REPORT_JSON = "eval_report.json"
REPORT_MD = "eval_report.md"
GROUPS = ("overall", "rare", "common")
TABLE_THEMES = 20


def build_report(config, *, base_model: str, adapters, scores: dict, groups: dict, members: dict, rare: list,
                 train_counts, trained_on: dict, pair_ids: list[str], data_stats: dict, device: str,
                 timings: dict) -> dict:
    any_scores = next(iter(scores.values()))
    models = {}
    for name, pair_scores in scores.items():
        models[name] = {
            "overall": pair_scores.summarize(),
            "rare": pair_scores.summarize(groups["rare"]),
            "common": pair_scores.summarize(groups["common"]),
            "per_theme": {theme: pair_scores.summarize(idx) for theme, idx in sorted(members.items())},
            "trained_on": trained_on.get(name),
            "adapter": next((str(a.path) for a in adapters if a.name == name), None),
            "seconds": timings.get(name),
            "per_pair": {"loss_sum": pair_scores.loss_sum.tolist(), "correct": pair_scores.correct.tolist(),
                         "tokens": pair_scores.tokens.tolist()},
        }
    return {
        "format": "rhizome.eval_report", "version": 1, "config": to_dict(config), "base_model": base_model,
        "adapters": {a.name: str(a.path) for a in adapters}, "device": device,
        "test": {"pairs": len(any_scores.tokens), "tokens": int(any_scores.tokens.sum()),
                 "truncated": data_stats.get("truncated", 0), "dropped_no_target": data_stats.get("dropped_no_target", 0)},
        "rare_max_pairs": config.rare_max_pairs, "rare_rule": config.rare_rule, "rare_themes": list(rare),
        "theme_train_pairs": {theme: int(train_counts[theme]) for theme in sorted(members)},
        "pair_ids": list(pair_ids), "groups": {g: list(groups[g]) for g in ("rare", "common")},
        "models": models,
    }


def featured_themes(report: dict, k: int) -> tuple[list[str], list[str]]:
    """(up to k test themes most frequent in training, up to k rare themes with the most test tokens)."""
    counts = report["theme_train_pairs"]
    tokens = {t: m["tokens"] for t, m in report["models"]["base"]["per_theme"].items()}
    rare = set(report["rare_themes"])
    frequent = sorted((t for t in counts if t not in rare), key=lambda t: (-counts[t], -tokens[t], t))[:k]
    rarest = sorted(rare, key=lambda t: (-tokens[t], counts[t], t))[:k]
    return frequent, rarest


def _num(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def to_markdown(report: dict) -> str:
    models = report["models"]
    test = report["test"]
    rule = "all of its themes are" if report["rare_rule"] == "all" else "any of its themes is"
    lines = [
        "# Evaluation", "",
        (f"Test split `{report['config']['test_file']}`: {test['pairs']:,} pairs, {test['tokens']:,} assistant tokens "
         f"scored; base model `{report['base_model']}`; {report['device']}."),
        (f"Rare themes: carried by at most {report['rare_max_pairs']} pairs of `{report['config']['train_file']}` "
         f"({len(report['rare_themes'])} of {len(report['theme_train_pairs'])} test themes); a pair is rare when "
         f"{rule} rare."),
        ("Loss: mean cross-entropy (nats) per assistant token; perplexity = exp(loss); token accuracy: greedy "
         "next-token prediction on assistant tokens."), "",
        "| model | group | pairs | tokens | loss | perplexity | token accuracy |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, model in models.items():
        for group in GROUPS:
            m = model[group]
            lines.append(f"| {name} | {group} | {m['pairs']:,} | {m['tokens']:,} | {_num(m['loss'], '.4f')} | "
                         f"{_num(m['perplexity'], '.2f')} | {_pct(m['token_accuracy'])} |")
    trained = {name: m["trained_on"] for name, m in models.items() if m["trained_on"]}
    if trained:
        lines += ["", "What each adapter was trained on (theme tracker of its training run):", "",
                  "| model | theme coverage | entropy (nats) | themes seen |", "|---|---:|---:|---:|"]
        for name, t in trained.items():
            lines.append(f"| {name} | {_pct(t['coverage'])} | {t['entropy']:.3f} | "
                         f"{t['themes_seen']:,} of {t['themes_total']:,} |")
    frequent, rarest = featured_themes(report, TABLE_THEMES)
    names = list(models)
    lines += ["", ("Perplexity per theme (the most frequent themes in training, then the rare ones with the most "
                   "test tokens; all themes are in eval_report.json):"), "",
              "| theme | training pairs | test pairs | " + " | ".join(names) + " |",
              "|---|---:|---:|" + "---:|" * len(names)]
    for theme in frequent + rarest:
        per = [models[n]["per_theme"][theme] for n in names]
        lines.append(f"| {theme}{' (rare)' if theme in rarest else ''} | {report['theme_train_pairs'][theme]} | "
                     f"{per[0]['pairs']} | " + " | ".join(_num(p["perplexity"], ".2f") for p in per) + " |")
    text = "\n".join(lines) + "\n"
    if "preferences" in report:
        from rhizome.evaluate.preferences import markdown

        text += "\n" + markdown(report["preferences"])
    if "qa" in report:
        from rhizome.evaluate.qa_report import to_markdown as qa_markdown

        text += "\n" + qa_markdown(report["qa"])
    return text


def summary_lines(report: dict) -> list[str]:
    lines = [f"{'model':<32} {'group':<8} {'pairs':>6} {'perplexity':>11} {'token acc':>10}"]
    for name, model in report["models"].items():
        for group in GROUPS:
            m = model[group]
            lines.append(f"{name:<32} {group:<8} {m['pairs']:>6} {_num(m['perplexity'], '.2f'):>11} "
                         f"{_pct(m['token_accuracy']):>10}")
    if "preferences" in report:
        from rhizome.evaluate.preferences import summary_lines as preference_lines

        lines += ["", *preference_lines(report["preferences"])]
    if "qa" in report:
        from rhizome.evaluate.qa_report import summary_lines as qa_lines

        lines += ["", *qa_lines(report["qa"])]
    return lines


def write_report(report: dict, output_dir: Path, *, plots: bool, plot_themes: int) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    files = [output_dir / REPORT_JSON, output_dir / REPORT_MD]
    if plots:
        from rhizome.evaluate.plots import plot_report

        files += plot_report(report, output_dir, plot_themes)
    report["files"] = [str(f) for f in files]
    atomic.write_text(output_dir / REPORT_MD, to_markdown(report))
    atomic.write_json(output_dir / REPORT_JSON, report)
